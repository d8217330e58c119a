"""LAMOST LASP-style catalogue reader: which spectra to process, with their parameters.

A catalogue is a FITS binary table (plain or gzip) or a CSV/text table (``,``, ``|`` or tab
separated, ``#`` comment lines skipped) with, in any letter case:

- ``obsid``, ``ra``, ``dec``, ``snrg``, ``teff``, ``logg``, ``feh``, ``rv`` (required;
  ``fe_h`` is accepted for ``feh``);
- ``class`` (optional: ``STAR``, ``GALAXY``, ``QSO``, ``Unknown``);
- EITHER a file-path column (``path``, ``filename``, ``file`` or ``fits``; relative paths are
  joined to ``root`` when given) OR ``lmjd``, ``planid``, ``spid``, ``fiberid``, from which the
  path is built with :data:`DEFAULT_PATH_TEMPLATE`, the layout of the LAMOST data-release
  spectra directory (``fits/{lmjd}/{planid}/spec-{lmjd}-{planid}_sp{spid:02d}-{fiberid:03d}
  .fits.gz`` under the release root).

LASP writes -9999 for a missing value; those (and empty CSV fields) become NaN. A row's RA or
Dec that is not a number becomes NaN too (the row is kept: the pipeline flags ``BAD_COORDS``).

Text that is not valid UTF-8 (a file name in a FITS string column, or anywhere in a CSV) is
decoded as the operating system decodes file names (:func:`os.fsdecode`: UTF-8 with
``surrogateescape``), so the path still opens the file it names and nothing is lost; it is
never an error. :meth:`Catalog.drop_duplicates` keeps the first row of each obsid.
This module is not in :data:`~csstflux.io.registry.READER_MODULES`: a catalogue is not a
spectrum. It reads the whole table into memory (a full LRS release catalogue of ~10⁷ rows needs
a few GB; split it or pre-select columns for smaller machines).
"""

from __future__ import annotations

import csv
import itertools
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from csstflux.containers import text_array
from csstflux.errors import InputFormatError
from csstflux.io.fits.decode import head_cards, load_fits_bytes, read_bintable

FORMAT = "lamost-catalog"
#: LAMOST data-release layout; fields ``root``, ``lmjd``, ``planid``, ``spid``, ``fiberid``.
DEFAULT_PATH_TEMPLATE = ("{root}/{lmjd}/{planid}/"
                         "spec-{lmjd}-{planid}_sp{spid:02d}-{fiberid:03d}.fits.gz")
#: LASP's value for "not measured".
MISSING = -9999.0

FLOAT_COLUMNS = ("ra", "dec", "snrg", "teff", "logg", "feh", "rv")
#: Columns whose unreadable values are NaN per row (the row is flagged, not the catalogue).
COORD_COLUMNS = ("ra", "dec")
REQUIRED = ("obsid", *FLOAT_COLUMNS)
PATH_COLUMNS = ("path", "filename", "file", "fits")
LOCATION_COLUMNS = ("lmjd", "planid", "spid", "fiberid")
_ALIASES = {"fe_h": "feh"}


@dataclass(frozen=True)
class Catalog:
    """Catalogue columns, each (n_row,). Angles in degrees, teff K, logg dex (cgs), feh dex,
    rv km/s, snrg the g-band S/N; NaN where LASP gave no value."""

    obsid: NDArray[np.int64]
    ra: NDArray[np.float64]
    dec: NDArray[np.float64]
    snrg: NDArray[np.float64]
    teff: NDArray[np.float64]
    logg: NDArray[np.float64]
    feh: NDArray[np.float64]
    rv: NDArray[np.float64]
    class_: NDArray[np.str_]
    """Object class as LASP gives it (``""`` where the catalogue has no class column)."""
    path: NDArray[np.str_]
    """Spectrum file of each row."""
    has_class: bool = True
    """False when the catalogue had no class column."""
    source: str = ""

    def __post_init__(self) -> None:
        n = self.obsid.shape
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray) and v.shape != n:
                raise ValueError(f"column {f.name} has shape {v.shape}, obsid has {n}")

    def __len__(self) -> int:
        return int(self.obsid.size)

    def take(self, index: NDArray[Any]) -> Catalog:
        """Rows ``index`` (boolean mask or integer indices)."""
        cols = {f.name: getattr(self, f.name) for f in fields(self)}
        return Catalog(**{k: (v[index] if isinstance(v, np.ndarray) else v)
                          for k, v in cols.items()})

    def drop_duplicates(self) -> tuple[Catalog, NDArray[np.bool_], list[tuple[str, str]]]:
        """The first row of each obsid, in catalogue order.

        Returns
        -------
        kept : Catalog
            The rows kept.
        repeated : (len(kept),) bool
            True for a kept row whose obsid the catalogue repeats.
        dropped : list of (file, reason)
            One entry per row dropped, naming its obsid, its row and the row kept.
        """
        _, first, inverse = np.unique(self.obsid, return_index=True, return_inverse=True)
        first_of_row = first[np.ravel(inverse)]
        keep = first_of_row == np.arange(len(self))
        counts = np.bincount(first_of_row, minlength=len(self))
        dropped = [(str(self.path[i]),
                    f"duplicate obsid {int(self.obsid[i])}: catalogue row {i + 1} dropped, row "
                    f"{int(first_of_row[i]) + 1} ({self.path[first_of_row[i]]}) kept")
                   for i in np.flatnonzero(~keep)]
        return self.take(keep), counts[keep] > 1, dropped

    def select(self, min_snr: float | None = None, star_only: bool = False,
               teff_range: tuple[float, float] | None = None,
               limit: int | None = None) -> Catalog:
        """Rows with ``snrg >= min_snr``, class STAR (``star_only``), ``teff`` within the closed
        ``teff_range`` (K), in catalogue order, at most ``limit`` of them. NaN fails every
        numeric cut."""
        keep = np.ones(len(self), dtype=bool)
        if min_snr is not None:
            keep &= self.snrg >= min_snr
        if star_only:
            if not self.has_class:
                raise ValueError("star_only needs a class column; this catalogue has none")
            keep &= np.char.upper(np.char.strip(self.class_)) == "STAR"
        if teff_range is not None:
            lo, hi = teff_range
            keep &= (self.teff >= lo) & (self.teff <= hi)
        index = np.flatnonzero(keep)
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            index = index[:limit]
        return self.take(index)


def identify(path: str | os.PathLike[str]) -> bool:
    """True for a FITS table or CSV whose columns include obsid, ra and dec."""
    p = Path(path)
    if not p.is_file():
        return False
    headers = head_cards(p, max_hdus=2)
    if headers:
        names = {v.strip("'").strip().lower() for h in headers[1:] for k, v in h.items()
                 if k.startswith("TTYPE")}
        return {"obsid", "ra", "dec"} <= names
    try:
        with open(p, encoding="utf-8", errors="surrogateescape") as fh:
            line = next((ln for ln in fh if ln.strip() and not ln.startswith("#")), "")
    except OSError:
        return False
    names = {c.strip().lower() for c in _split(line)}
    return {"obsid", "ra", "dec"} <= names


def _split(line: str) -> list[str]:
    return line.rstrip("\r\n").split(_delimiter(line))


def _delimiter(line: str) -> str:
    return max((",", "|", "\t"), key=line.count)


def _read_fits(path: Path) -> dict[str, NDArray[Any]]:
    _, hdus = load_fits_bytes(path)
    table_hdu = next((h for h in hdus[1:] if h.get_str("XTENSION").upper() == "BINTABLE"), None)
    if table_hdu is None:
        raise InputFormatError("no binary table in this FITS file", path=path,
                               expected="a BINTABLE extension", found=f"{len(hdus)} HDUs")
    table = read_bintable(path, table_hdu.index, "catalogue table")
    return {n: _text(table[n]) if table[n].dtype.kind in "SO" else table[n]
            for n in table.dtype.names or ()}


def _text(col: NDArray[Any]) -> NDArray[np.str_]:
    """A column as text; byte strings (a FITS string column) decoded like file names, so
    bytes that are not UTF-8 never fail (ASCII, the usual case, is decoded at numpy speed)."""
    if col.dtype.kind not in "SO":
        return col.astype(str)
    if col.dtype.kind == "S":
        try:
            return col.astype(str)
        except UnicodeDecodeError:
            pass
    return np.array([os.fsdecode(v) if isinstance(v, bytes) else str(v)
                     for v in np.ravel(col)], dtype=str).reshape(col.shape)


#: Rows of a CSV catalogue turned into arrays at a time: the text of one block is held as
#: Python strings (~60 bytes per field), the rest as compact arrays, so that reading a
#: release-sized catalogue does not hold every field as an object at once.
CSV_BLOCK_ROWS = 20_000


def _read_csv(path: Path) -> dict[str, NDArray[Any]]:
    try:
        fh = open(path, encoding="utf-8", errors="surrogateescape", newline="")  # noqa: SIM115
    except OSError as exc:
        raise InputFormatError(f"cannot read the catalogue as text ({exc})", path=path) from exc
    with fh:
        try:
            lines = (ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#"))
            first = next(lines, None)
            if first is None:
                raise InputFormatError("catalogue is empty", path=path, expected="a header line")
            reader = csv.reader(itertools.chain([first], lines), delimiter=_delimiter(first))
            header = [c.strip() for c in next(reader)]
            cells: list[list[str]] = [[] for _ in header]
            blocks: list[list[NDArray[Any]]] = [[] for _ in header]
            for i, r in enumerate(reader):
                if len(r) != len(header):
                    raise InputFormatError("row has the wrong number of fields", path=path,
                                           expected=f"{len(header)} fields",
                                           found=f"{len(r)} in data row {i + 1}")
                for col, value in zip(cells, r, strict=True):
                    col.append(value.strip())
                if len(cells[0]) == CSV_BLOCK_ROWS:
                    _flush(cells, blocks)
            _flush(cells, blocks)
        except OSError as exc:
            raise InputFormatError(f"cannot read the catalogue as text ({exc})",
                                   path=path) from exc
    out = {}
    for name, b in zip(header, blocks, strict=True):   # one column's copy at a time
        out[name] = np.concatenate(b) if len(b) > 1 else b[0]
        b.clear()
    return out


def _flush(cells: list[list[str]], blocks: list[list[NDArray[Any]]]) -> None:
    """Move the collected fields into one more array per column."""
    if cells and (cells[0] or not blocks[0]):
        for col, out in zip(cells, blocks, strict=True):
            out.append(np.array(col, dtype=str))
            col.clear()


def _floats(col: NDArray[Any], name: str, path: Path, *, lenient: bool = False
            ) -> NDArray[np.float64]:
    """A numeric column; blank and -9999 → NaN. ``lenient``: a value that is not a number
    → NaN too (else the whole column is refused)."""
    if col.dtype.kind in "US":
        col = np.where(np.char.strip(col.astype(str)) == "", "nan", col.astype(str))
    try:
        out = np.asarray(col, dtype=np.float64)
    except ValueError as exc:
        if not lenient:
            raise InputFormatError(f"column {name!r} is not numeric ({exc})",
                                   path=path) from exc
        out = np.array([_float_or_nan(v) for v in np.ravel(col)], dtype=np.float64)
    return np.where(out == MISSING, np.nan, out)


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _ints(col: NDArray[Any], name: str, path: Path) -> NDArray[np.int64]:
    if col.dtype.kind in "iu":
        return col.astype(np.int64)
    if col.dtype.kind in "US":
        try:  # exact for integers beyond 2**53, which a float round trip would not be
            return np.char.strip(col.astype(str)).astype(np.int64)
        except ValueError:
            pass
    f = _floats(col, name, path)
    if not np.all(np.isfinite(f)) or not np.all(f == np.round(f)):
        raise InputFormatError(f"column {name!r} must hold integers in every row", path=path)
    return f.astype(np.int64)


def read(path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None,
         template: str = DEFAULT_PATH_TEMPLATE) -> Catalog:
    """Read a LAMOST catalogue (FITS table or CSV) into a :class:`Catalog`.

    Parameters
    ----------
    path
        ``.fits``/``.fits.gz`` binary table, or any text table (CSV, ``|`` or tab separated).
    root
        Release root directory: ``{root}`` in ``template``, and the base of relative paths in a
        path column. Default ``"."`` for built paths; relative paths stay as they are.
    template
        ``str.format`` template for the spectrum path from ``root``, ``lmjd``, ``planid``
        (stripped string), ``spid`` and ``fiberid`` (ints); used only when the catalogue has no
        path column. Replace the suffix for uncompressed releases (``….fits``).

    Raises
    ------
    InputFormatError
        Unreadable file, or missing columns (named, with the columns found).
    """
    p = Path(path)
    fits_like = head_cards(p, max_hdus=1) != [] or p.name.lower().endswith((".fits", ".fits.gz",
                                                                             ".fit", ".fit.gz"))
    raw = _read_fits(p) if fits_like else _read_csv(p)
    cols = {_ALIASES.get(k.strip().lower(), k.strip().lower()): v for k, v in raw.items()}
    path_col = next((c for c in PATH_COLUMNS if c in cols), None)
    missing = [c for c in REQUIRED if c not in cols]
    if path_col is None:
        missing += [c for c in LOCATION_COLUMNS if c not in cols]
    if missing:
        need = (" and a path column (" + "/".join(PATH_COLUMNS) + ") or "
                + ", ".join(LOCATION_COLUMNS)) if path_col is None else ""
        raise InputFormatError(f"catalogue lacks required columns {missing}", path=p,
                               expected=", ".join(REQUIRED) + need, found=sorted(cols))
    n = len(cols["obsid"])
    if path_col is not None:
        names = [str(v).strip() for v in _text(np.asarray(cols[path_col]))]
        paths = [os.path.join(root, s) if root is not None and not os.path.isabs(s) else s
                 for s in names]
    else:
        lmjd = _ints(cols["lmjd"], "lmjd", p)
        spid = _ints(cols["spid"], "spid", p)
        fiberid = _ints(cols["fiberid"], "fiberid", p)
        planid = np.char.strip(_text(np.asarray(cols["planid"])))
        base = "." if root is None else os.fspath(root)
        try:
            paths = [template.format(root=base, lmjd=int(lmjd[i]), planid=str(planid[i]),
                                     spid=int(spid[i]), fiberid=int(fiberid[i]))
                     for i in range(n)]
        except (KeyError, IndexError, ValueError) as exc:
            raise InputFormatError(f"bad path template {template!r} ({exc!r})", path=p) from exc
    has_class = "class" in cols
    cls = (np.char.strip(_text(np.asarray(cols["class"]))) if has_class
           else np.full(n, "", dtype=str))
    return Catalog(
        obsid=_ints(cols["obsid"], "obsid", p),
        **{c: _floats(cols[c], c, p, lenient=c in COORD_COLUMNS) for c in FLOAT_COLUMNS},
        class_=np.asarray(cls, dtype=str), path=text_array(paths),
        has_class=has_class, source=str(p))
