"""Plain containers handed from the readers to the spectral core.

Arrays are numpy, batch first. Wavelengths are always vacuum Å (readers convert air wavelengths
with :mod:`csstflux.airvac` and record the original medium in ``meta``). ``mask`` is True where
a pixel is bad; a masked pixel's flux and error are never used, whatever number they hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class Resolution:
    """Line-spread function of a spectrum: a constant resolving power or a constant FWHM.

    Exactly one of ``resolving_power`` and ``fwhm`` is set, or neither for a model spectrum
    whose resolution is limited only by its sampling.
    """

    resolving_power: float | None = None
    """Constant R = λ / FWHM."""
    fwhm: float | None = None
    """Constant FWHM in Å."""

    def __post_init__(self) -> None:
        if self.resolving_power is not None and self.fwhm is not None:
            raise ValueError("give a resolving power or a FWHM, not both")
        for v in (self.resolving_power, self.fwhm):
            if v is not None and not v > 0:
                raise ValueError(f"resolution must be positive, got {v}")

    def r_at(self, wavelength: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        """Resolving power at each wavelength (Å); ``inf`` for an unresolved model."""
        lam: NDArray[np.float64] = np.asarray(wavelength, dtype=np.float64)
        if self.resolving_power is not None:
            return np.full(lam.shape, self.resolving_power)
        if self.fwhm is not None:
            return lam / self.fwhm
        return np.full(lam.shape, np.inf)

    def to_attrs(self) -> dict[str, float | None]:
        return {"resolving_power": self.resolving_power, "fwhm_angstrom": self.fwhm}


@dataclass(frozen=True)
class Spectrum:
    """One spectrum as read from a file.

    ``wavelength``: (n_pix,) float64, vacuum Å, increasing. ``flux``: (n_pix,) float64 in
    ``meta["flux_unit"]``. ``error``: (n_pix,) float64, 1σ in the flux unit, NaN where unknown.
    ``mask``: (n_pix,) bool, True = bad pixel.
    """

    wavelength: NDArray[np.float64]
    flux: NDArray[np.float64]
    error: NDArray[np.float64]
    mask: NDArray[np.bool_]
    meta: dict[str, Any] = field(default_factory=dict)
    resolution: Resolution = field(default_factory=Resolution)
    source: str = ""
    """Path the spectrum was read from."""
    format: str = ""
    """Name of the reader that produced it."""

    def __post_init__(self) -> None:
        n = self.wavelength.shape
        for name in ("flux", "error", "mask"):
            arr = getattr(self, name)
            if arr.shape != n:
                raise ValueError(f"{name} has shape {arr.shape}, wavelength has {n}")

    @property
    def n_pix(self) -> int:
        return int(self.wavelength.size)

    @property
    def good(self) -> NDArray[np.bool_]:
        """True where the pixel may be used."""
        return ~self.mask


@dataclass(frozen=True)
class SpectralLibrary:
    """Many spectra with stellar parameters, on one wavelength grid or on one grid per star.

    ``wavelength``: vacuum Å, either (n_pix,) shared by every star or (n_star, n_pix), one
    increasing grid per star (libraries whose files each carry their own wavelength solution).
    In the per-star form a star with fewer than n_pix pixels of its own has its grid continued
    geometrically to n_pix and those extra pixels masked; ``extra["n_pix"]`` keeps each
    star's own pixel count. ``flux``, ``error``: (n_star, n_pix) float64 (error NaN where
    unknown). ``mask``: (n_star, n_pix) bool, True = bad. ``names``: (n_star,) identifiers.
    ``teff`` (K), ``logg`` (dex, cgs), ``feh`` (dex): (n_star,) float64, NaN where unknown.
    ``extra``: further per-star columns, each (n_star,).
    """

    wavelength: NDArray[np.float64]
    flux: NDArray[np.float64]
    error: NDArray[np.float64]
    mask: NDArray[np.bool_]
    names: NDArray[np.str_]
    teff: NDArray[np.float64]
    logg: NDArray[np.float64]
    feh: NDArray[np.float64]
    extra: dict[str, NDArray[Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    resolution: Resolution = field(default_factory=Resolution)
    """Line-spread function of the library (of its first star when ``star_resolution`` is
    set)."""
    source: str = ""
    format: str = ""
    star_resolution: tuple[Resolution, ...] | None = None
    """One line-spread function per star, when the stars' differ; None when all share
    ``resolution``."""

    def __post_init__(self) -> None:
        n_star, n_pix = self.flux.shape
        if self.wavelength.shape not in ((n_pix,), (n_star, n_pix)):
            raise ValueError(f"wavelength has shape {self.wavelength.shape}, "
                             f"flux {self.flux.shape}")
        for name in ("error", "mask"):
            if getattr(self, name).shape != (n_star, n_pix):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, "
                                 f"flux {self.flux.shape}")
        for name in ("names", "teff", "logg", "feh"):
            if getattr(self, name).shape != (n_star,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, "
                                 f"expected ({n_star},)")
        for k, v in self.extra.items():
            if np.shape(v)[:1] != (n_star,):
                raise ValueError(f"extra column {k!r} has shape {np.shape(v)}, "
                                 f"expected ({n_star},)")
        if self.star_resolution is not None and len(self.star_resolution) != n_star:
            raise ValueError(f"star_resolution has {len(self.star_resolution)} entries, "
                             f"expected {n_star}")

    @property
    def n_star(self) -> int:
        return int(self.flux.shape[0])

    @property
    def per_star_grid(self) -> bool:
        """True when every star has its own wavelength grid (``wavelength`` is 2-D)."""
        return self.wavelength.ndim == 2

    def source_resolution(self) -> Resolution | NDArray[np.float64]:
        """The stars' resolution as the spectral core takes it
        (:func:`csstflux.spectra.degrade.source_r`): ``resolution`` when shared, else the
        resolving power of each star at each of its pixels, (n_star, n_pix)."""
        if self.star_resolution is None:
            return self.resolution
        w = np.broadcast_to(self.wavelength, self.flux.shape)
        return np.stack([r.r_at(w[i]) for i, r in enumerate(self.star_resolution)])

    def subset(self, index: NDArray[Any]) -> SpectralLibrary:
        """The library restricted to stars ``index`` (boolean mask or integer indices)."""
        return SpectralLibrary(
            wavelength=self.wavelength[index] if self.per_star_grid else self.wavelength,
            flux=self.flux[index], error=self.error[index],
            mask=self.mask[index], names=self.names[index], teff=self.teff[index],
            logg=self.logg[index], feh=self.feh[index],
            extra={k: np.asarray(v)[index] for k, v in self.extra.items()},
            meta=dict(self.meta), resolution=self.resolution, source=self.source,
            format=self.format,
            star_resolution=None if self.star_resolution is None else tuple(
                self.star_resolution[i] for i in np.arange(self.n_star)[index]))

    def spectrum(self, i: int) -> Spectrum:
        """Star ``i`` as a :class:`Spectrum` (on its own pixels only, for a per-star grid)."""
        meta = dict(self.meta)
        meta.update(name=str(self.names[i]), teff=float(self.teff[i]), logg=float(self.logg[i]),
                    feh=float(self.feh[i]))
        n = int(self.extra["n_pix"][i]) if "n_pix" in self.extra else self.flux.shape[1]
        wave = self.wavelength[i] if self.per_star_grid else self.wavelength
        res = self.resolution if self.star_resolution is None else self.star_resolution[i]
        return Spectrum(wave[:n], self.flux[i, :n], self.error[i, :n], self.mask[i, :n], meta,
                        res, self.source, self.format)


def text_array(values: ArrayLike) -> NDArray[Any]:
    """A column of text (file paths) as numpy's variable-width UTF-8 strings.

    ``StringDType`` keeps each entry in 16 bytes plus its own text, where a fixed-width ``str``
    array keeps 4 bytes per character of the longest entry: a million 100-character paths take
    about 0.1 GB instead of 0.4 GB, and the catalogue and the star table each hold one such
    column for every star of a release. Names that cannot be UTF-8 (bytes kept as surrogate
    escapes) fall back to a fixed-width ``str`` array. Either kind compares, indexes and
    ``tolist()``s alike; convert with ``np.asarray(a, dtype=object)`` or element-wise, not with
    ``astype(str)``, which numpy refuses for ``StringDType``.
    """
    try:
        return np.asarray(values, dtype=np.dtypes.StringDType())
    except (UnicodeEncodeError, TypeError):    # lone surrogates: not UTF-8
        return np.asarray(values, dtype=str)
