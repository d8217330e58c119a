"""The two shared recipes that turn any spectrum into a network input or a network target.

Every stage (training sets from models, prediction on survey catalogues, verification on
empirical libraries) calls these two functions, so inputs and targets are made the same way
everywhere.

:func:`prepare_input` — a LAMOST-like normalised spectrum on ``grids.INPUT_GRID``:

1. rest frame (:func:`~csstflux.spectra.doppler.to_rest_frame`), when a velocity or redshift
   is given; the source resolving power is evaluated at the *observed* wavelengths, where the
   instrument defines it (R itself is unchanged by a Doppler shift);
2. trim to the grid's range plus the kernel's reach, which only saves time;
3. degrade to R = ``INPUT_GRID.resolution`` (2000) on the native pixels;
4. resample onto ``INPUT_GRID.edges``, conserving flux;
5. divide by the 51-pixel moving-average continuum.

:func:`prepare_target` — a CSST-like scaled SED on ``grids.OUTPUT_GRID``: the same steps 1–4
with R = 200 and the output grid, then division by the mean flux in 5526–5586 Å.

Why degrade before resampling: the line-spread function has to act on the spectrum where its
resolution is known, i.e. on the native pixels whose R the source describes, and while the
sampling is still fine enough to represent the Gaussian. Resampling first would average over
output pixels (a box up to the size of an R = 200 resolution element) and the degraded result
would then carry box ⊗ Gaussian instead of the target Gaussian. Normalisation and scaling come
last because they are defined on the model grids (51 *grid* pixels; a window in Å).

Masks: a pixel masked at any step stays masked; the output mask says which grid pixels hold no
usable value (outside the source's coverage included), so the caller can decide, per spectrum,
whether too much is missing (``csstflux.flags.Flag.COVERAGE`` / ``MASKED_PIXELS``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from csstflux.containers import Resolution
from csstflux.grids import INPUT_GRID, OUTPUT_GRID, LogGrid
from csstflux.spectra._common import BoolArray, FloatArray, as_batch, check_wavelength, unbatch
from csstflux.spectra.degrade import TRUNCATE_SIGMA, degrade_resolution, kernel_sigma, source_r
from csstflux.spectra.doppler import to_rest_frame
from csstflux.spectra.normalise import continuum_normalise, scale_sed
from csstflux.spectra.resample import resample

__all__ = ["prepare_input", "prepare_target"]

#: Source pixels kept beyond the kernel's reach on each side when trimming.
_TRIM_PAD_PIXELS = 2


def prepare_input(
    wavelength: ArrayLike,
    flux: ArrayLike,
    error: ArrayLike | None,
    mask: ArrayLike | None,
    source_resolution: Resolution | ArrayLike | None,
    rv_kms: ArrayLike | None = None,
    z: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray | None, BoolArray]:
    """Make network inputs: normalised R = 2000 spectra on ``INPUT_GRID`` (2238 pixels).

    Parameters
    ----------
    wavelength : (n_pix,) or (n_spec, n_pix) float
        Observed vacuum wavelengths, Å, strictly increasing.
    flux : (n_pix,) or (n_spec, n_pix) float
        Flux density per unit wavelength, any unit (calibrated or not).
    error : same shape as flux, or None
        1σ errors; non-finite or non-positive values mask their pixel. An array that is NaN
        everywhere (error unknown, as readers store it for models) counts as None.
    mask : same shape as flux, bool, or None
        True = bad pixel.
    source_resolution : Resolution, float array or None
        Resolving power of the source (see :func:`csstflux.spectra.degrade.source_r`); None for
        a model spectrum.
    rv_kms, z : float or (n_spec,) float, optional
        Radial velocity (km/s) or redshift to remove; at most one. None: already rest frame.

    Returns
    -------
    flux_norm : (2238,) or (n_spec, 2238) float64
        Continuum-normalised flux; 0.0 where masked.
    error_norm : same shape, float64, or None when there is no error
        1σ of ``flux_norm``; 0.0 where masked.
    mask : same shape, bool
        True = no usable value.

    Warns
    -----
    ResolutionWarning
        Where the source is already at or below R = 2000 (e.g. MILES below ~5000 Å).
    """
    f, e, m = _to_grid(INPUT_GRID, wavelength, flux, error, mask, source_resolution, rv_kms, z)
    flux_norm, err_norm, mask_norm, _ = continuum_normalise(f, e, m)
    return flux_norm, err_norm, mask_norm


def prepare_target(
    wavelength: ArrayLike,
    flux: ArrayLike,
    error: ArrayLike | None,
    mask: ArrayLike | None,
    source_resolution: Resolution | ArrayLike | None,
    rv_kms: ArrayLike | None = None,
    z: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray | None, BoolArray, FloatArray]:
    """Make network targets: scaled R = 200 SEDs on ``OUTPUT_GRID`` (574 pixels).

    Parameters are as in :func:`prepare_input`.

    Returns
    -------
    sed : (574,) or (n_spec, 574) float64
        Flux divided by its mean in 5526–5586 Å; 0.0 where masked.
    error : same shape, float64, or None when there is no error
    mask : same shape, bool
        True = no usable value; a whole row when the scaling window has no good pixel.
    scale : float64, shape () or (n_spec,)
        The divisor, in the flux unit (NaN where unusable); keep it to undo the scaling.
    """
    f, e, m = _to_grid(OUTPUT_GRID, wavelength, flux, error, mask, source_resolution, rv_kms, z)
    return scale_sed(OUTPUT_GRID.wavelength, f, e, m)


def _to_grid(
    grid: LogGrid,
    wavelength: ArrayLike,
    flux: ArrayLike,
    error: ArrayLike | None,
    mask: ArrayLike | None,
    source_resolution: Resolution | ArrayLike | None,
    rv_kms: ArrayLike | None,
    z: ArrayLike | None,
) -> tuple[FloatArray, FloatArray | None, BoolArray]:
    """Steps 1–4: rest frame, trim, degrade to ``grid.resolution``, resample onto ``grid``."""
    f2, squeeze = as_batch(flux)
    n_spec, n_pix = f2.shape
    w_obs = check_wavelength(wavelength, n_spec, n_pix)
    e2 = None if error is None else np.asarray(error, dtype=np.float64)
    if e2 is not None and np.all(np.isnan(e2)):
        e2 = None
    r_src = source_r(source_resolution, w_obs)
    if r_src.ndim < 2:
        r_src = np.broadcast_to(r_src, w_obs.shape)
    if rv_kms is None and z is None:
        w_rest = w_obs
    else:
        w_rest = np.atleast_2d(
            to_rest_frame(w_obs[0] if w_obs.shape[0] == 1 else w_obs, rv_kms=rv_kms, z=z)
        )
        if w_rest.shape[0] not in (1, n_spec):
            raise ValueError(f"{w_rest.shape[0]} velocities or redshifts for {n_spec} spectra")

    cols = _needed_columns(w_rest, grid)
    m2 = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), f2.shape)
    f_deg, e_deg, m_deg, _ = degrade_resolution(
        w_rest[:, cols],
        f2[:, cols],
        grid.resolution,
        source=r_src[:, cols],
        error=None if e2 is None else np.broadcast_to(e2, f2.shape)[:, cols],
        mask=None if m2 is None else m2[:, cols],
    )
    f_out, e_out, m_out = resample(w_rest[:, cols], f_deg, grid, e_deg, m_deg)
    return (
        unbatch(f_out, squeeze),
        None if e_out is None else unbatch(e_out, squeeze),
        unbatch(m_out, squeeze),
    )


def _needed_columns(w_rest: FloatArray, grid: LogGrid) -> slice:
    """Source columns whose pixels can reach ``grid`` after degrading to its resolution.

    The kernel reaches ``TRUNCATE_SIGMA`` σ (σ at R_s = ∞, the widest) beyond the grid edges;
    two more pixels cover the pixel width. Columns are shared by all rows (their union).
    """
    reach = TRUNCATE_SIGMA * float(kernel_sigma(grid.resolution, np.inf))
    lo, hi = grid.edges[0] * np.exp(-reach), grid.edges[-1] * np.exp(reach)
    inside = np.any((w_rest >= lo) & (w_rest <= hi), axis=0)
    if not np.any(inside):
        return slice(0, w_rest.shape[1])  # nothing overlaps; resample masks every pixel
    idx = np.flatnonzero(inside)
    start = max(int(idx[0]) - _TRIM_PAD_PIXELS, 0)
    stop = min(int(idx[-1]) + 1 + _TRIM_PAD_PIXELS, w_rest.shape[1])
    if stop - start < 2:
        start, stop = max(stop - 2, 0), max(stop, 2)
    return slice(start, stop)
