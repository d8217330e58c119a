"""What a ``predict-catalog`` run will do: the input list, its order and its units of work.

The input list comes from a LAMOST catalogue (paths given or built from lmjd/planid/spid/
fiberid) or, without one, from a scan of the release root for ``spec-*.fits[.gz]`` with the
metadata read from the headers (a Dask stage of its own). Stars are sorted by their nested
HEALPix index at :data:`~csstflux.io.stores.predictions.HEALPIX_ORDER` (then obsid) so that a sky
region
is a few contiguous runs of stars; the sorted list is cut into chunks of ``chunk_stars``, one
Zarr chunk and one Dask task each. The plan's hash covers the files, their order, the selection
and the model, so that a rerun can tell whether it may resume.

Catalogue rows are judged here, before any cluster starts, and never stop the job: a row
without a valid sky position is kept and flagged ``BAD_COORDS`` (it sorts after every indexed
star, see :mod:`csstflux.io.stores.predictions`); of the rows that share an obsid only the first (in
catalogue order, after the selection) is kept, flagged ``DUPLICATE``, and each dropped row is
listed with its reason in :attr:`Plan.dropped`. File names are handled as bytes where they
are not UTF-8 (hashed with :func:`os.fsencode`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.constants import C_KMS
from csstflux.containers import text_array
from csstflux.flags import Flag
from csstflux.io.formats.lamost_catalog import Catalog
from csstflux.io.stores.predictions import StarTable
from csstflux.spectra.doppler import stellar_redshift


@dataclass(frozen=True)
class Selection:
    """Simple selections applied to the input list before anything is read."""

    limit: int | None = None
    """At most this many stars (after the other cuts, in catalogue order)."""
    min_snr: float | None = None
    """Minimum g-band S/N."""
    star_only: bool = False
    """Class STAR only."""
    teff_range: tuple[float, float] | None = None
    """Catalogue Teff range, K."""

    def apply(self, cat: Catalog) -> Catalog:
        return cat.select(min_snr=self.min_snr, star_only=self.star_only,
                          teff_range=self.teff_range, limit=self.limit)


@dataclass(frozen=True)
class Plan:
    """The sorted input list and its chunks."""

    stars: StarTable
    """Per-star columns, sorted by HEALPix index."""
    z: NDArray[np.float64]
    """Redshift to remove per star (from the catalogue rv, else the header Z; NaN: none)."""
    chunk_stars: int
    input_hash: str
    flags: NDArray[np.uint32]
    """(n_stars,) flags known from the catalogue alone (``BAD_COORDS``, ``DUPLICATE``)."""
    dropped: tuple[tuple[str, str], ...] = ()
    """(file, reason) of each catalogue row dropped while planning (duplicate obsids)."""

    @property
    def n_stars(self) -> int:
        return int(self.stars.obsid.size)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_stars // self.chunk_stars)

    def chunk(self, i: int) -> tuple[int, int]:
        """Star range [start, stop) of chunk ``i``."""
        start = i * self.chunk_stars
        return start, min(start + self.chunk_stars, self.n_stars)


def star_table_from_catalog(cat: Catalog, repeated: NDArray[np.bool_] | None = None
                            ) -> tuple[StarTable, NDArray[np.float64], NDArray[np.uint32]]:
    """Store columns from a catalogue, sorted by (HEALPix, obsid), each star's redshift (from
    the catalogue rv by the relativistic Doppler formula; NaN where rv is unknown, and the
    header's Z is used when the file is read) and its catalogue flags: ``BAD_COORDS`` without
    a valid position, ``DUPLICATE`` where ``repeated`` (one per catalogue row) says the
    obsid was repeated."""
    beta = cat.rv / C_KMS
    with np.errstate(invalid="ignore"):
        z = np.sqrt((1 + beta) / (1 - beta)) - 1
    stars, perm = StarTable.build(obsid=cat.obsid, ra=cat.ra, dec=cat.dec, snr_g=cat.snrg,
                                  teff=cat.teff, logg=cat.logg, feh=cat.feh, rv=cat.rv,
                                  class_=cat.class_, source_file=cat.path)
    flags = np.where(stars.healpix < 0, np.uint32(Flag.BAD_COORDS), np.uint32(0))
    if repeated is not None:
        flags[np.asarray(repeated, bool)[perm]] |= np.uint32(Flag.DUPLICATE)
    return stars, z[perm], flags.astype(np.uint32)


def make_plan(stars: StarTable, z: NDArray[np.float64], chunk_stars: int,
              fingerprint: dict[str, Any], flags: NDArray[np.uint32] | None = None,
              dropped: tuple[tuple[str, str], ...] = ()) -> Plan:
    """The plan for sorted ``stars``; its hash covers the fingerprint and the ordered files
    (as bytes, so that a name that is not UTF-8 hashes too)."""
    if chunk_stars <= 0:
        raise ValueError("chunk_stars must be positive")
    h = hashlib.sha256()
    for name in sorted(fingerprint):
        h.update(f"{name}={fingerprint[name]!r};".encode())
    h.update(str(chunk_stars).encode())
    h.update(np.asarray(stars.obsid, np.int64).tobytes())
    h.update(b"\n".join(os.fsencode(f) for f in np.asarray(stars.source_file).tolist()))
    return Plan(stars=stars, z=np.asarray(z, np.float64), chunk_stars=chunk_stars,
                input_hash=h.hexdigest(),
                flags=(np.zeros(len(stars), np.uint32) if flags is None
                       else np.asarray(flags, np.uint32)),
                dropped=tuple(dropped))


def scan_release(root: str | Path) -> list[str]:
    """``spec-*.fits`` / ``spec-*.fits.gz`` under ``root``, sorted."""
    r = Path(root)
    files = [p for p in r.rglob("spec-*") if p.name.endswith((".fits", ".fits.gz", ".fit"))]
    return sorted(str(p) for p in files)


def catalog_from_headers(paths: list[str], headers: list[dict[str, Any] | None]) -> Catalog:
    """A catalogue built from file headers (None where the header is unreadable: the star is
    kept with unknown metadata so the run records the failure)."""
    def col(key: str, default: float = np.nan) -> NDArray[np.float64]:
        return np.array([(h or {}).get(key) if (h or {}).get(key) is not None else default
                         for h in headers], dtype=np.float64)

    obsid = np.array([(h or {}).get("obsid") or -(i + 1) for i, h in enumerate(headers)],
                     dtype=np.int64)
    z = stellar_redshift(col("z"))   # LAMOST's -9999 (no measurement): unknown rv
    rv = C_KMS * ((1 + z) ** 2 - 1) / ((1 + z) ** 2 + 1)  # inverse relativistic Doppler
    n = len(paths)
    return Catalog(obsid=obsid, ra=col("ra"), dec=col("dec"), snrg=col("snrg"),
                   teff=np.full(n, np.nan), logg=np.full(n, np.nan), feh=np.full(n, np.nan),
                   rv=rv, class_=np.array([(h or {}).get("class") or "" for h in headers],
                                          dtype=str),
                   path=text_array(paths), has_class=True, source="scan")
