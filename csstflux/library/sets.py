"""Configuration of training sets and the helpers that read libraries for them.

One :class:`SetConfig` per source of training pairs; :class:`TrainsetConfig` holds the list and
the output. The kinds and what each makes (paper §2 and Appendix C; the stand-ins used with the
data at hand are recorded in the store's provenance):

``grid``
    A model grid in CK04/CDBS layout (the ATLAS9 family BOSZ is built on). Parameters drawn
    uniformly over the configured ranges; targets interpolated in ln F between grid nodes
    (metallicity included), degraded to R=200 and scaled; inputs from the R=2000 input emulator at
    the same parameters (CK04's ~20 Å sampling cannot give R=2000 inputs).
``bosz``
    Real BOSZ files: each model is one pair; input = BOSZ degraded to R=2000 and normalised,
    target as above: exactly the paper's pre-training set.
``miles``
    MILES: real inputs (R≈2500 degraded to 2000, air converted to vacuum), targets the MILES SED
    over 3540–7410 Å, masked elsewhere.
``pickles``, ``ngsl``, ``generic``
    Empirical SEDs as targets (full range); inputs from the emulator at the stars' parameters
    (Pickles: from the spectral type through Mamajek's table; NGSL: the paper's Appendix C).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from csstflux.config import JobPath

KINDS = ("grid", "bosz", "miles", "pickles", "ngsl", "generic")
#: Kinds whose inputs are not emulated: the grid's come from its parameters, MILES and BOSZ
#: have their own input-range spectra.
REAL_INPUT_KINDS = ("grid", "miles", "bosz")

#: Default train:test ratios by star (paper §2: 3:1 for the grid, 4:1 for libraries).
DEFAULT_SPLIT = {"grid": (3, 1), "bosz": (3, 1), "miles": (4, 1), "pickles": (4, 1),
                 "ngsl": (4, 1), "generic": (4, 1)}

#: What stands in for what, written into provenance.
STAND_INS = {
    "grid": "Castelli-Kurucz 2004 ATLAS9 grid stands in for BOSZ (same model family): targets "
            "from the grid, R=2000 inputs from the MILES-trained emulator (Appendix C), since "
            "the grid's ~20 A optical sampling cannot give R=2000 inputs",
    "pickles": "Pickles 1998 stands in for NGSL: Pickles SEDs as targets, inputs from the "
               "emulator at parameters from the spectral type (Pecaut & Mamajek 2013 table)",
}


@dataclass(frozen=True)
class SetConfig:
    """One source of training pairs."""

    kind: str
    """One of ``grid``, ``bosz``, ``miles``, ``pickles``, ``ngsl``, ``generic``."""
    path: JobPath
    """Library directory (or grid directory)."""
    params: JobPath | None = None
    """Parameter table: Mamajek's table or a CSV (pickles), a CSV (ngsl, generic, miles)."""
    name: str | None = None
    """Subset name written in the store (defaults to ``kind``)."""
    n_samples: int = 20000
    """Number of parameter draws (grid only)."""
    teff_range: tuple[float, float] = (5000.0, 9750.0)
    """Teff range, K (paper: 5000–9750 K)."""
    logg_range: tuple[float, float] | None = None
    """log g range (grid: defaults to the emulator's training range)."""
    feh_range: tuple[float, float] | None = None
    """[Fe/H] range (grid: defaults to the emulator's training range)."""
    vet: bool = True
    """Apply the Appendix-B GP vetting (libraries only)."""
    rmsae_cut: float = 0.05
    """Vetting RMSAE cut."""
    split: tuple[int, int] | None = None
    """Train:test ratio by star; default 3:1 for grids, 4:1 for libraries."""
    validation_fraction: float = 0.1
    """Fraction of the training stars set aside for validation (early stopping, σ
    calibration); 1 keeps the set out of training altogether (validation and test only)."""
    teff_from_sed: bool = False
    """Emulated sets only: emulate the input at the Teff of the star's own SED
    (:func:`csstflux.library.sedfit.fit_teff`) instead of the catalogue Teff, so that input and
    target describe one star; the Teff range applies to that Teff."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown set kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.n_samples <= 0:
            raise ValueError("n_samples must be positive")
        if not 0 <= self.validation_fraction <= 1:
            raise ValueError("validation_fraction must be in [0, 1]")
        if self.teff_from_sed and self.kind in REAL_INPUT_KINDS:
            raise ValueError(f"teff_from_sed applies to sets with emulated inputs, not to "
                             f"{self.kind!r} (its inputs are the stars' own spectra)")
        if self.split is not None and (len(self.split) != 2 or min(self.split) < 0
                                       or sum(self.split) <= 0):
            raise ValueError(f"split must be two non-negative integers, got {self.split}")

    @property
    def ratio(self) -> tuple[int, int]:
        return tuple(self.split) if self.split else DEFAULT_SPLIT[self.kind]  # type: ignore[return-value]

    @property
    def subset(self) -> str:
        return self.name or self.kind


@dataclass(frozen=True)
class TrainsetConfig:
    """``csstflux build-trainset`` configuration (the ``[trainset]`` table of a job file)."""

    out: JobPath
    """Output Zarr store."""
    sets: tuple[SetConfig, ...] = field(default_factory=tuple)
    """The sources, each a ``[[sets]]`` table."""
    seed: int = 1
    """Seed of every random choice (parameter draws, splits)."""
    emulator: JobPath | None = None
    """Input emulator file; the one shipped with csstflux when omitted."""
    overwrite: bool = False
    """Replace an existing store."""

    def __post_init__(self) -> None:
        if not self.sets:
            raise ValueError("a training set needs at least one [[sets]] entry")
        names = [s.subset for s in self.sets]
        if len(set(names)) != len(names):
            raise ValueError(f"subset names must be unique, got {names}")
