"""Library spectra made into network inputs and targets, with what happened recorded.

Thin wrappers over :func:`csstflux.spectra.prepare_input` / ``prepare_target`` for a whole
:class:`~csstflux.containers.SpectralLibrary`; they collect the resolution warnings (a library
coarser than R=2000 over part of the range, like MILES below ~5000 Å) into a note for the
training store's provenance instead of letting them escape.

A library whose stars each have their own wavelength grid (``lib.wavelength`` (n_star, n_pix),
as :func:`csstflux.io.formats.generic_fits.read_library` gives for files with their own WCS) needs
no
common grid first: each star is degraded on its own pixels with its own line-spread function
(``lib.source_resolution()``) and resampled, conserving flux, straight onto the model grid, by
the same two recipes every other stage uses. A detour through a common grid would resample
before degrading, adding the box of its pixels to the line-spread function (see
:mod:`csstflux.spectra.prepare`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.containers import SpectralLibrary
from csstflux.spectra.degrade import ResolutionWarning
from csstflux.spectra.prepare import prepare_input, prepare_target


def _collect(fn: Any, *args: Any) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResolutionWarning)
        out = fn(*args)
    notes = sorted({str(w.message) for w in caught if issubclass(w.category, ResolutionWarning)})
    for w in caught:
        if not issubclass(w.category, ResolutionWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return out, notes


def library_targets(lib: SpectralLibrary) -> tuple[NDArray[np.float64], NDArray[np.bool_],
                                                   list[str]]:
    """Scaled R=200 SEDs on the output grid: (n_star, 574) flux, mask, resolution notes."""
    (sed, _err, mask, _scale), notes = _collect(
        prepare_target, lib.wavelength, lib.flux, None, lib.mask,
        lib.source_resolution())
    return sed, mask, notes


def library_inputs(lib: SpectralLibrary) -> tuple[NDArray[np.float64], NDArray[np.bool_],
                                                  list[str]]:
    """Normalised R=2000 spectra on the input grid: (n_star, 2238) flux, mask, notes."""
    (flux, _err, mask), notes = _collect(
        prepare_input, lib.wavelength, lib.flux, None, lib.mask,
        lib.source_resolution())
    return flux, mask, notes
