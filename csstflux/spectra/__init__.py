"""The spectral core: pure-numpy operations on batches of spectra.

Conventions shared by every function here:

* **Shapes.** Per-pixel arrays are ``(n_pix,)`` for one spectrum or ``(n_spec, n_pix)`` for a
  batch; a function returns the rank it was given. Wavelengths are ``(n_pix,)`` (shared by the
  batch) or ``(n_spec, n_pix)``, vacuum Å, strictly increasing.
* **Numbers.** All arithmetic is float64, whatever the input dtype; outputs are float64.
* **Mask.** ``mask`` is boolean, True = bad pixel, and it is authoritative: a masked pixel's flux
  and error are never read. Non-finite flux, and errors that are non-finite or ≤ 0 (inverse
  variance not finite and positive), are folded into the mask on entry. On output a masked
  pixel holds **0.0** in flux and error (never NaN) with ``mask`` True; check the mask, not the
  value. Masks only grow along a chain of operations.
* **Errors.** ``error`` is a 1σ array in the flux unit, or None; when it is None the returned
  error is None too. Propagation treats input pixels as independent and does not return the
  covariance that smoothing and resampling introduce between output pixels.
* **Purity.** No I/O, no printing, no configuration, no global random state (noise takes a
  :class:`numpy.random.Generator`). Legal-but-suspicious input gives a warning (e.g.
  :class:`ResolutionWarning`); impossible input raises ``ValueError`` or a
  :mod:`csstflux.errors` exception.

Modules: :mod:`~csstflux.spectra.resample` (flux-conserving rebinning),
:mod:`~csstflux.spectra.degrade` (Gaussian LSF in ln λ), :mod:`~csstflux.spectra.normalise`
(moving-average continuum, SED scaling), :mod:`~csstflux.spectra.noise` (eq. 1),
:mod:`~csstflux.spectra.doppler` (rest frame), :mod:`~csstflux.spectra.metrics` (eqs. 2–3 and
summaries), :mod:`~csstflux.spectra.prepare` (the input and target recipes built from them),
:mod:`~csstflux.spectra.color` (the continuum colour normalisation removes),
:mod:`~csstflux.spectra.error_profile` and :mod:`~csstflux.spectra.augment` (LAMOST-like
errors and training augmentations).
"""

from csstflux.spectra.color import continuum_color
from csstflux.spectra.degrade import ResolutionWarning, degrade_resolution, kernel_sigma
from csstflux.spectra.doppler import doppler_factor, to_rest_frame
from csstflux.spectra.metrics import (
    BinnedSummary,
    Summary,
    band_summary,
    binned_summary,
    coverage,
    pixel_summary,
    relative_residual,
    rmsae,
)
from csstflux.spectra.noise import add_noise
from csstflux.spectra.normalise import continuum_normalise, moving_average, scale_sed
from csstflux.spectra.prepare import prepare_input, prepare_target
from csstflux.spectra.resample import is_log_uniform, pixel_edges, resample, resampling_matrix

__all__ = [
    "BinnedSummary",
    "ResolutionWarning",
    "Summary",
    "add_noise",
    "band_summary",
    "continuum_color",
    "binned_summary",
    "continuum_normalise",
    "coverage",
    "degrade_resolution",
    "doppler_factor",
    "is_log_uniform",
    "kernel_sigma",
    "moving_average",
    "pixel_edges",
    "pixel_summary",
    "prepare_input",
    "prepare_target",
    "relative_residual",
    "resample",
    "resampling_matrix",
    "rmsae",
    "scale_sed",
    "to_rest_frame",
]
