"""Verification on a stellar library (paper §4.3, Fig. 11): each star against its own SED.

For every star of a :class:`~csstflux.containers.SpectralLibrary` the network input is built from
the star's own spectrum (degraded to R=2000, resampled and continuum-normalised by
:func:`~csstflux.library.prepare.library_inputs`) and the prediction is compared with the star's
own scaled R=200 SED (:func:`~csstflux.library.prepare.library_targets`) over the output pixels
the library covers (the target mask).

Input errors: the library spectrum is treated as an observation at signal-to-noise ``snr``:
``flux_err = |flux_norm| / snr`` (eq. 1's error vector), and no noise is added, since the
spectrum already carries its own. Masked input pixels follow
:func:`~csstflux.model.predictor.fill_masked`.

Star selection, in this order, each recorded in :attr:`Verification.left_out`:

1. ``teff_range`` (when given): stars whose Teff (the library's: its parameter table or the
   reader's own, e.g. MILES' params file or a generic file's TEFF keyword) lies outside it are
   left out; stars without a Teff are kept (nothing places them outside), and the ``domain``
   block reports them under ``unknown_teff``, split by the Teff their spectrum gives;
2. ``vet_stars``: the Appendix-B vetting (:func:`~csstflux.library.vetting.vet`, same Teff
   range) leaves out stars a GP from their parameters cannot reproduce, as the paper did;
3. stars with more than ``max_masked_input`` of their input pixels masked (the library does not
   cover 4000–7000 Å), or with no target pixel, are left out.

Statistics: per output pixel across stars, the median, robust 1σ (half the 16th–84th percentile
range) and plain std of r; the values at :data:`~csstflux.grids.VERIFY_WAVELENGTHS`, taken at
the output pixel nearest each wavelength among those where at least half of the stars have
data; per-star RMSAE (eq. 3) and coverage (|r| < σ_rel); the overall coverage. Real libraries
hold a few reddened or badly calibrated stars, which widen the std much more than the robust 1σ.

Per band (:data:`~csstflux.grids.BANDS`, only bands where the library has data): the typical
median, robust 1σ and std of r as :func:`~csstflux.spectra.metrics.band_summary` gives them
(per-pixel statistics across stars, then their median over the band's covered pixels, as
``csstflux evaluate`` reports them) and the coverage pooled over the band's (star, pixel)
values.

The result also keeps every library star's normalised input spectrum, Teff and whether it was
verified (:attr:`Verification.inputs`, ...), so that checks made from the spectra alone can be
set against the stars' parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.containers import SpectralLibrary
from csstflux.errors import ConfigError
from csstflux.grids import BANDS, OUTPUT_GRID, TEFF_DOMAIN, VERIFY_WAVELENGTHS
from csstflux.library.domain import DomainModel, robust_std
from csstflux.library.prepare import library_inputs, library_targets
from csstflux.library.sed_grid import median_ratio_to_grid
from csstflux.library.vetting import vet
from csstflux.model.evaluate import PredictorLike
from csstflux.model.predictor import fill_masked
from csstflux.spectra.color import continuum_color
from csstflux.spectra.metrics import (
    Summary,
    band_summary,
    coverage,
    pixel_summary,
    relative_residual,
    rmsae,
)

__all__ = ["Verification", "verify_library"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Verification:
    """Result of :func:`verify_library`; star arrays (n_stars,), pixel arrays (574,)."""

    names: NDArray[np.str_]
    """Stars used."""
    teff: FloatArray
    logg: FloatArray
    feh: FloatArray
    snr: float
    """SNR assumed for the input errors."""
    residual: FloatArray
    """(n_stars, 574) relative residual r; 0 where masked."""
    sigma: FloatArray
    """(n_stars, 574) predicted relative σ, ``sed_err / |sed|``."""
    mask: NDArray[np.bool_]
    """(n_stars, 574) True where the library has no target value."""
    pixel: Summary
    """Per-pixel median, robust 1σ, std and count of r."""
    rmsae: FloatArray
    """Per-star RMSAE over the covered pixels."""
    star_coverage: FloatArray
    """Per-star fraction of |r| < σ_rel."""
    coverage: float
    """Fraction of |r| < σ_rel over every covered (star, pixel)."""
    at_pixel: dict[str, float]
    """Requested wavelength (key, Å as text) → centre of the pixel used, Å (NaN: none)."""
    n_input: int
    """Stars in the library."""
    inputs: FloatArray
    """(n_input, 2238) normalised input spectrum of every library star, in library order, the
    stars left out included; 0 where masked."""
    input_mask: NDArray[np.bool_]
    """(n_input, 2238) True where an input pixel has no usable value."""
    input_names: NDArray[np.str_]
    """(n_input,) every library star."""
    input_teff: FloatArray
    """(n_input,) Teff of every library star, K (NaN where unknown)."""
    used: NDArray[np.bool_]
    """(n_input,) True for the stars verified; ``names == input_names[used]``."""
    left_out: dict[str, list[str]] = field(default_factory=dict)
    """Reason → names of the stars left out."""
    notes: list[str] = field(default_factory=list)
    """Resolution notes of the input and target preparation."""
    domain: dict[str, Any] | None = None
    """The ``domain`` block (:func:`domain_block`): how many stars in and out of the Teff
    domain the spectrum alone flags; None when no domain model was given."""
    grid_ratio: FloatArray | None = None
    """(574,) median over the verified stars with parameters inside the CK04 grid of (library
    SED / CK04 SED at the star's parameters) − 1, both scaled alike
    (:class:`~csstflux.library.sed_grid.SedGrid`): how the library differs from the model
    atmospheres the network was pre-trained on; None where no star has parameters inside."""
    n_grid_ratio: int = 0
    """Stars behind :attr:`grid_ratio`."""

    @property
    def n_stars(self) -> int:
        return int(self.names.size)

    def _at(self, values: FloatArray) -> dict[str, float | None]:
        wl = OUTPUT_GRID.wavelength
        out: dict[str, float | None] = {}
        for key, lam in self.at_pixel.items():
            ok = np.isfinite(lam)
            v = float(values[int(np.argmin(np.abs(wl - lam)))]) if ok else np.nan
            out[key] = v if np.isfinite(v) else None
        return out

    @property
    def sigma_at(self) -> dict[str, float | None]:
        """Robust 1σ at the verification wavelengths."""
        return self._at(np.asarray(self.pixel.sigma, dtype=np.float64))

    @property
    def std_at(self) -> dict[str, float | None]:
        """Plain standard deviation at the verification wavelengths."""
        return self._at(np.asarray(self.pixel.std, dtype=np.float64))

    @property
    def median_at(self) -> dict[str, float | None]:
        """Median residual at the verification wavelengths."""
        return self._at(np.asarray(self.pixel.median, dtype=np.float64))

    @property
    def grid_ratio_at(self) -> dict[str, float | None]:
        """Median library / CK04 − 1 at the verification wavelengths (:attr:`grid_ratio`)."""
        if self.grid_ratio is None:
            return dict.fromkeys(self.at_pixel)
        return self._at(self.grid_ratio)

    @property
    def bands(self) -> dict[str, dict[str, float | int | None]]:
        """Per band where the library has data: ``median``, ``sigma`` (robust 1σ), ``std``
        (plain 1σ) of r, ``coverage`` (fraction of |r| < σ_rel) and ``n_pixels`` (band pixels
        with data); see the module docstring."""
        wl = OUTPUT_GRID.wavelength
        out: dict[str, dict[str, float | int | None]] = {}
        for name, s in band_summary(self.residual, wl, self.mask).items():
            if int(s.count) == 0:
                continue
            pix = BANDS[name].mask(wl)
            cov = coverage(self.residual[:, pix], self.sigma[:, pix], self.mask[:, pix])
            out[name] = {k: _finite(v) for k, v in (("median", s.median), ("sigma", s.sigma),
                                                     ("std", s.std), ("coverage", cov))}
            out[name]["n_pixels"] = int(s.count)
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (the keys of ``csstflux verify-library --json``).

        ``domain``: :attr:`domain` (None without a domain model).
        """
        med = float(np.nanmedian(self.rmsae)) if np.isfinite(self.rmsae).any() else None
        return {"n_stars": self.n_stars, "sigma_at": self.sigma_at, "std_at": self.std_at,
                "median_rmsae": med,
                "coverage": float(self.coverage) if np.isfinite(self.coverage) else None,
                "median_at": self.median_at, "pixel_at": self.at_pixel, "snr": self.snr,
                "n_input": self.n_input,
                "n_left_out": {k: len(v) for k, v in self.left_out.items()},
                "n_vetted_out": len(self.left_out.get("vetting", [])),
                "bands": self.bands, "domain": self.domain,
                "grid_ratio_at": self.grid_ratio_at, "n_grid_ratio": self.n_grid_ratio}


def _finite(x: Any) -> float | None:
    v = float(x)
    return v if np.isfinite(v) else None


def _select(lib: SpectralLibrary, sed: FloatArray, t_mask: NDArray[np.bool_],
            in_mask: NDArray[np.bool_], teff_range: tuple[float, float] | None,
            vet_stars: bool, max_masked_input: float) -> tuple[NDArray[np.bool_],
                                                              dict[str, list[str]]]:
    keep = np.ones(lib.n_star, bool)
    left: dict[str, list[str]] = {}

    def drop(reason: str, bad: NDArray[np.bool_]) -> None:
        nonlocal keep
        hit = keep & bad
        left[reason] = [str(n) for n in lib.names[hit]]
        keep &= ~bad

    if teff_range is not None:
        lo, hi = teff_range
        t = np.asarray(lib.teff, np.float64)
        with np.errstate(invalid="ignore"):
            drop("teff", np.isfinite(t) & ~((t >= lo) & (t <= hi)))
    if vet_stars:
        try:
            res = vet(lib.teff[keep], lib.logg[keep], lib.feh[keep], sed[keep], t_mask[keep],
                      teff_range=teff_range)
        except ValueError as exc:
            raise ConfigError(f"cannot vet the library: {exc}", path=lib.source or None,
                              expected="at least 5 stars with Teff, log g and [Fe/H]") from exc
        bad = np.zeros(lib.n_star, bool)
        bad[np.flatnonzero(keep)[~res.kept]] = True
        drop("vetting", bad)
    drop("input_coverage", (in_mask.mean(axis=1) > max_masked_input) | t_mask.all(axis=1))
    return keep, left


def verify_library(predictor: PredictorLike, lib: SpectralLibrary, *, snr: float = 80.0,
                   teff_range: tuple[float, float] | None = None, vet_stars: bool = False,
                   max_masked_input: float = 0.1,
                   wavelengths: Sequence[float] = VERIFY_WAVELENGTHS,
                   domain_model: DomainModel | None = None, seed: int = 0) -> Verification:
    """Predict every usable star of a library and compare with its own SED.

    Parameters
    ----------
    predictor : callable
        ``(flux_norm, flux_err) -> (sed, sed_err)``.
    lib : SpectralLibrary
        The library (any flux unit; inputs and targets are normalised and scaled).
    snr : float
        SNR assumed for the input errors ``|flux_norm| / snr``.
    teff_range : (float, float) or None
        Leave out the stars whose Teff is known and outside [lo, hi] K (stars without a Teff
        are kept); None keeps every star.
    vet_stars : bool
        Apply the Appendix-B vetting first (needs Teff, log g, [Fe/H]).
    max_masked_input : float
        Largest fraction of masked input pixels a star may have.
    wavelengths : sequence of float
        Wavelengths (Å) of ``sigma_at`` / ``std_at``.
    domain_model : DomainModel, optional
        When given, every star with a usable input (the ones outside ``teff_range`` too) is
        judged from its spectrum alone (:func:`domain_block`).
    seed : int
        Seed of the noise drawn for the domain block.

    Returns
    -------
    Verification

    Raises
    ------
    ConfigError
        Vetting is asked for but fewer than 5 stars have parameters; or no star is usable.
    """
    if not snr > 0:
        raise ValueError(f"snr must be positive, got {snr}")
    flux_in, in_mask, notes_in = library_inputs(lib)
    sed_t, t_mask, notes_t = library_targets(lib)
    keep, left = _select(lib, sed_t, t_mask, in_mask, teff_range, vet_stars, max_masked_input)
    if not keep.any():
        raise ConfigError("no star of the library is usable for verification",
                          path=lib.source or None, expected="at least 1 star",
                          found={k: len(v) for k, v in left.items()})
    x = np.asarray(flux_in[keep], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        err = np.abs(x) / snr
    x32, e32 = fill_masked(x, err, in_mask[keep])
    sed, sed_err = predictor(x32, e32)
    sed = np.asarray(sed, dtype=np.float64)
    sed_err = np.asarray(sed_err, dtype=np.float64)
    r, bad = relative_residual(sed, sed_t[keep], t_mask[keep])
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(np.abs(sed) > 0, sed_err / np.abs(sed), np.inf)
    pix = pixel_summary(r, bad)
    n = int(keep.sum())
    wl = OUTPUT_GRID.wavelength
    enough = np.asarray(pix.count) >= max(1, -(-n // 2))
    at_pixel = {}
    for lam in wavelengths:
        cand = np.flatnonzero(enough)
        at_pixel[f"{lam:g}"] = (float(wl[cand[np.argmin(np.abs(wl[cand] - lam))]])
                                if cand.size else float("nan"))
    block = None
    if domain_model is not None:
        usable = in_mask.mean(axis=1) <= max_masked_input
        block = domain_block(domain_model, flux_in, in_mask, continuum_color(
            lib.wavelength, lib.flux, lib.mask), np.asarray(lib.teff, np.float64), usable,
            snr, np.random.default_rng(seed), names=np.asarray(lib.names).astype(str))
    grid, n_grid = median_ratio_to_grid(sed_t[keep], t_mask[keep], lib.teff[keep],
                                        lib.logg[keep], lib.feh[keep])
    return Verification(
        grid_ratio=grid, n_grid_ratio=n_grid, domain=block,
        names=np.asarray(lib.names[keep]).astype(str), teff=lib.teff[keep],
        logg=lib.logg[keep], feh=lib.feh[keep], snr=float(snr), residual=r, sigma=sigma,
        mask=bad, pixel=pix, rmsae=np.asarray(rmsae(r, bad), dtype=np.float64),
        star_coverage=np.asarray([float(coverage(r[i], sigma[i], bad[i])) for i in range(n)]),
        coverage=float(coverage(r, sigma, bad)), at_pixel=at_pixel, n_input=lib.n_star,
        inputs=flux_in, input_mask=in_mask, input_names=np.asarray(lib.names).astype(str),
        input_teff=np.asarray(lib.teff, dtype=np.float64), used=keep, left_out=left,
        notes=sorted(set(notes_in) | set(notes_t)))


def domain_block(model: DomainModel, inputs: FloatArray, mask: NDArray[np.bool_],
                 color: FloatArray, teff: FloatArray, usable: NDArray[np.bool_], snr: float,
                 rng: np.random.Generator, names: NDArray[np.str_] | None = None
                 ) -> dict[str, Any]:
    """Stars in and out of :data:`~csstflux.grids.TEFF_DOMAIN` and how many of each the domain
    model flags from the spectrum alone.

    A star's Teff is the library's (``teff``: its parameter table or the reader's own, e.g.
    MILES' params file or a generic file's TEFF keyword); a star with none (NaN) goes to
    ``unknown_teff``, which is split further by the spectrum's own estimate ``teff_est``
    (:meth:`DomainModel.estimate`, point estimate inside the domain or not) into
    ``by_teff_est`` ``in_range`` / ``out_of_range``, each with the stars' ``names`` (when
    given) and their ``teff_est`` (K, rounded).

    Inputs get noise at ``snr`` (σ = |F|/snr, drawn), as a survey spectrum would have.
    Returns ``{"teff_domain", "snr", "in_range", "out_of_range", "unknown_teff", "by_teff",
    "teff_estimate", "thresholds"}``; each group (and each Teff bin of ``by_teff``) gives
    ``n``, ``outside_domain``,
    ``out_of_distribution``, ``flagged`` (either) and ``fraction_flagged``;
    ``teff_estimate`` the median and robust σ of estimated − library Teff of the in-range
    stars.
    """
    x = np.where(mask, 1.0, np.asarray(inputs, np.float64))
    with np.errstate(invalid="ignore"):
        err = np.where(mask, 1.0, np.abs(x) / snr)
    noisy = np.where(mask, 1.0, x + err * rng.standard_normal(x.shape))
    sel = np.flatnonzero(usable)
    est = model.estimate(noisy[sel], err[sel], mask[sel], color[sel])
    outside, ood = model.flags(est)
    t = teff[sel]
    known = np.isfinite(t)
    inside = known & (t >= TEFF_DOMAIN[0]) & (t <= TEFF_DOMAIN[1])
    groups = {"in_range": inside, "out_of_range": known & ~inside, "unknown_teff": ~known}

    def counts(g: NDArray[np.bool_]) -> dict[str, Any]:
        n = int(g.sum())
        flagged = int((g & (outside | ood)).sum())
        return {"n": n, "outside_domain": int((g & outside).sum()),
                "out_of_distribution": int((g & ood).sum()), "flagged": flagged,
                "fraction_flagged": flagged / n if n else None}

    est_in = (est.teff >= TEFF_DOMAIN[0]) & (est.teff <= TEFF_DOMAIN[1])
    star = None if names is None else np.asarray(names).astype(str)[sel]

    def listed(g: NDArray[np.bool_]) -> dict[str, Any]:
        out = counts(g)
        out["teff_est"] = [_finite(np.round(v)) for v in est.teff[g]]
        if star is not None:
            out["names"] = [str(v) for v in star[g]]
        return out

    d = est.teff[inside] - t[inside]
    edges = (0.0, 4000.0, 4500.0, 4700.0, TEFF_DOMAIN[0], TEFF_DOMAIN[1], 11000.0, np.inf)
    by_teff = {f"{lo:g}-{hi:g}": counts(known & (t >= lo) & (t < hi))
               for lo, hi in zip(edges[:-1], edges[1:], strict=True)}
    block = {k: counts(g) for k, g in groups.items()}
    block["unknown_teff"]["by_teff_est"] = {"in_range": listed(~known & est_in),
                                            "out_of_range": listed(~known & ~est_in)}
    return {"teff_domain": list(TEFF_DOMAIN), "snr": float(snr), **block, "by_teff": by_teff,
            "teff_estimate": {"n": int(inside.sum()),
                              "median_K": _finite(np.median(d)) if d.size else None,
                              "robust_sigma_K": _finite(robust_std(d)) if d.size else None},
            "thresholds": model.describe()}
