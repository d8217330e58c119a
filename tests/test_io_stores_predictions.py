"""The predictions store: layout seen by xarray, chunk-aligned writes, exact sky queries."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
import zarr.storage

import csstflux
from csstflux.errors import StoreError
from csstflux.flags import Flag
from csstflux.grids import OUTPUT_GRID
from csstflux.io.formats.lamost_photometry import HEADER_BANDS
from csstflux.io.stores.predictions import (
    FORMAT_VERSION,
    HEALPIX_ORDER,
    StarTable,
    create_store,
    finalize,
    open_predictions,
    printable,
    query_indices,
    read_failures,
    write_block,
    write_failures,
)
from csstflux.sky import query as skyquery
from csstflux.sky.geometry import angular_separation

CHUNK = 64


def _sky(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform stars over the sphere plus dense fields across RA = 0 and at the north pole."""
    n_all = 2000
    ra = [rng.uniform(0, 360, n_all)]
    dec = [np.degrees(np.arcsin(rng.uniform(-1, 1, n_all)))]
    for ra0, dec0, n in ((0.0, 10.0, 400), (200.0, 89.2, 400), (75.0, -40.0, 200)):
        r = np.radians(2.5) * np.sqrt(rng.uniform(0, 1, n))
        phi = rng.uniform(0, 2 * np.pi, n)
        d = np.clip(dec0 + np.degrees(r * np.sin(phi)), -90, 90)
        a = (ra0 + np.degrees(r * np.cos(phi)) / max(np.cos(np.radians(d)).min(), 0.05)) % 360
        ra.append(a)
        dec.append(d)
    return np.concatenate(ra), np.concatenate(dec)


@pytest.fixture(scope="module")
def stars() -> StarTable:
    rng = np.random.default_rng(11)
    ra, dec = _sky(rng)
    n = ra.size
    table, perm = StarTable.build(
        obsid=rng.permutation(n).astype(np.int64) + 10**9, ra=ra, dec=dec,
        snr_g=rng.uniform(5, 100, n), teff=rng.uniform(4000, 9000, n),
        logg=rng.uniform(1, 5, n), feh=rng.uniform(-2, 0.5, n), rv=rng.normal(0, 40, n),
        class_=np.where(rng.uniform(size=n) < 0.95, "STAR", "GALAXY"),
        source_file=[f"spec-{i}.fits.gz" for i in range(n)])
    assert np.array_equal(table.ra, ra[perm])
    return table


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, stars: StarTable) -> Path:
    path = tmp_path_factory.mktemp("pred") / "pred.zarr"
    create_store(path, stars, CHUNK, {"model_sha256": "abc", "csstflux_version": "test"})
    n = len(stars)
    for start in range(0, n, 5 * CHUNK):
        stop = min(start + 5 * CHUNK, n)
        idx = np.arange(start, stop)
        sed = np.broadcast_to(idx[:, None] + OUTPUT_GRID.wavelength / 1e4, (idx.size, 574))
        write_block(path, start, stop, sed, sed * 0.01, idx % 7)
    write_failures(path, ["a.fits.gz", "b.fits.gz"], ["truncated", "not FITS"])
    finalize(path, {"completed": "now", "n_failures": 2})
    return path


def test_xarray_sees_dims_units_and_values(store: Path, stars: StarTable) -> None:
    ds = open_predictions(store)
    n = len(stars)
    files, errors = read_failures(store)
    assert dict(ds.sizes) == {"star": n, "wavelength": OUTPUT_GRID.n,
                              "header_band": len(HEADER_BANDS), "failure": len(files)}
    # the failures table and obsid as a coordinate, straight from open_predictions
    assert ds.failure_file.values.tolist() == files and ds.failure_error.values.tolist() == errors
    assert "obsid" in ds.coords
    one = ds.swap_dims(star="obsid").sel(obsid=int(stars.obsid[5]))
    np.testing.assert_array_equal(one.sed.values, ds.sed.values[5])
    assert ds.sed.dims == ("star", "wavelength") and ds.sed.dtype == np.float32
    assert ds.wavelength.attrs["units"] == "Angstrom" and ds.wavelength.attrs["medium"] == "vacuum"
    np.testing.assert_array_equal(ds.wavelength.values, OUTPUT_GRID.wavelength)
    np.testing.assert_array_equal(ds.obsid.values, stars.obsid)
    assert ds["class"].values.tolist() == stars.class_.tolist()  # numpy StringDType
    assert ds.flags.dtype == np.uint32
    np.testing.assert_array_equal(ds.flags.values, np.arange(n) % 7)
    np.testing.assert_allclose(ds.sed.values[:, 0], np.arange(n) + OUTPUT_GRID.wavelength[0] / 1e4,
                               rtol=1e-6)
    assert "chunk_healpix_min" not in ds
    assert ds.attrs["healpix"]["order"] == HEALPIX_ORDER and ds.attrs["model_sha256"] == "abc"
    assert ds.attrs["completed"] == "now" and ds.attrs["chunk_stars"] == CHUNK
    assert ds.attrs["output_grid"]["n"] == OUTPUT_GRID.n
    assert any(k.startswith("UNREADABLE") for k in ds.attrs["flags"])
    assert csstflux.open_predictions is open_predictions


def test_reference_sigma_is_stored_along_wavelength(tmp_path: Path, stars: StarTable) -> None:
    rho = np.linspace(0.0, 0.08, OUTPUT_GRID.n)
    path = create_store(tmp_path / "p.zarr", stars, CHUNK, reference_sigma=rho)
    ds = open_predictions(path)
    assert ds.sed_err_ref.dims == ("wavelength",)
    np.testing.assert_allclose(ds.sed_err_ref.values, rho, rtol=1e-6)
    assert "hypot" in ds.sed_err_ref.attrs["long_name"]
    assert "sed_err_ref" not in open_predictions(create_store(tmp_path / "q.zarr", stars, CHUNK))
    for bad in (rho[:-1], -rho - 0.01, np.full(OUTPUT_GRID.n, np.nan)):
        with pytest.raises(ValueError, match="reference_sigma"):
            create_store(tmp_path / "r.zarr", stars, CHUNK, reference_sigma=bad)


def test_unwritten_stars_are_nan_with_flags_zero(tmp_path: Path, stars: StarTable) -> None:
    path = create_store(tmp_path / "p.zarr", stars, CHUNK)
    write_block(path, CHUNK, 2 * CHUNK, np.ones((CHUNK, 574)), np.ones((CHUNK, 574)),
                np.full(CHUNK, int(Flag.LOW_SNR)))
    ds = open_predictions(path)
    assert np.isnan(ds.sed[:CHUNK].values).all() and (ds.flags[:CHUNK].values == 0).all()
    assert (ds.sed[CHUNK:2 * CHUNK].values == 1).all()
    assert (ds.flags[CHUNK:2 * CHUNK].values == Flag.LOW_SNR).all()


def test_write_block_refuses_unaligned_regions(tmp_path: Path, stars: StarTable) -> None:
    path = create_store(tmp_path / "p.zarr", stars, CHUNK)
    z = np.zeros((10, 574))
    with pytest.raises(ValueError, match="aligned"):
        write_block(path, 5, 15, z, z, np.zeros(10))
    n = len(stars)
    last = (n // CHUNK) * CHUNK
    write_block(path, last, n, np.zeros((n - last, 574)), np.zeros((n - last, 574)),
                np.zeros(n - last))  # the ragged last chunk ends at n
    with pytest.raises(ValueError, match="expected sed"):
        write_block(path, 0, CHUNK, z, z, np.zeros(10))


def test_refuses_existing_path_and_reserved_attrs(tmp_path: Path, stars: StarTable) -> None:
    path = create_store(tmp_path / "p.zarr", stars, CHUNK)
    with pytest.raises(StoreError, match="exists"):
        create_store(path, stars, CHUNK)
    create_store(path, stars, CHUNK, overwrite=True)
    with pytest.raises(ValueError, match="reserved"):
        create_store(tmp_path / "q.zarr", stars, CHUNK, {"healpix": 3})
    with pytest.raises(StoreError):
        open_predictions(tmp_path / "nothing.zarr")


def test_unsorted_stars_are_refused(stars: StarTable) -> None:
    cols = {f: getattr(stars, f) for f in stars.__dataclass_fields__}
    cols["healpix"] = cols["healpix"][::-1].copy()
    with pytest.raises(ValueError, match="sorted"):
        StarTable(**cols)


def test_failures_round_trip_and_replace(store: Path, tmp_path: Path, stars: StarTable) -> None:
    assert read_failures(store) == (["a.fits.gz", "b.fits.gz"], ["truncated", "not FITS"])
    path = create_store(tmp_path / "p.zarr", stars, CHUNK)
    assert read_failures(path) == ([], [])
    write_failures(path, ["x"], ["boom"])
    write_failures(path, ["y", "z"], ["e1", "e2"])
    assert read_failures(path) == (["y", "z"], ["e1", "e2"])
    write_failures(path, [], [])
    assert read_failures(path) == ([], [])


class _ReadLog:
    """Records the keys read from every LocalStore while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: list[str] = []
        original = zarr.storage.LocalStore.get

        async def get(store, key, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.keys.append(key)
            return await original(store, key, *args, **kwargs)

        monkeypatch.setattr(zarr.storage.LocalStore, "get", get)

    def chunks(self, array: str) -> set[int]:
        prefix = f"{array}/c/"
        return {int(k[len(prefix):].split("/")[0]) for k in self.keys if k.startswith(prefix)}


CONES = [(0.3, 10.2, 1.0), (359.5, 9.0, 2.0), (200.0, 89.5, 1.5), (20.0, 90.0, 0.9),
         (75.0, -40.0, 0.05), (120.0, 30.0, 20.0), (0.0, -89.9, 5.0), (10.0, 0.0, 0.0)]


@pytest.mark.parametrize("cone", CONES)
def test_cone_query_is_exact(store: Path, stars: StarTable, cone: tuple) -> None:
    ra, dec, radius = cone
    truth = np.flatnonzero(angular_separation(ra, dec, stars.ra, stars.dec) <= radius * 3600)
    got = query_indices(store, cone=cone)
    np.testing.assert_array_equal(got, truth)
    ds = open_predictions(store, cone=cone)
    np.testing.assert_array_equal(ds.obsid.values, stars.obsid[truth])
    assert ds.sizes["star"] == truth.size


def test_cone_query_reads_only_nearby_chunks(store: Path, stars: StarTable,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    n_chunks = -(-len(stars) // CHUNK)
    cone = (0.3, 10.2, 0.5)
    log = _ReadLog(monkeypatch)
    ds = open_predictions(store, cone=cone).load()
    assert ds.sizes["star"] > 5
    needed = set((query_indices(store, cone=cone) // CHUNK).tolist())
    assert log.chunks("sed") == needed  # the SEDs of exactly the chunks holding the stars
    scanned = log.chunks("ra")
    assert needed <= scanned and len(scanned) <= len(needed) + 3 and len(scanned) < n_chunks / 5


@pytest.mark.parametrize("order", [0, 3, 7, HEALPIX_ORDER])
def test_pixel_query(store: Path, stars: StarTable, order: int) -> None:
    shift = 2 * (HEALPIX_ORDER - order)
    coarse = stars.healpix >> shift
    rng = np.random.default_rng(order)
    chosen = rng.choice(np.unique(coarse), size=3, replace=False)
    chosen = np.r_[chosen, coarse.max() + 1 if order else 11]  # plus a pixel that may be empty
    truth = np.flatnonzero(np.isin(coarse, chosen))
    ds = open_predictions(store, pixels=list(chosen), order=order)
    np.testing.assert_array_equal(ds.obsid.values, stars.obsid[truth])


def test_bad_queries(store: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        query_indices(store, cone=(0, 0, 1), pixels=[1], order=3)
    with pytest.raises(ValueError, match="order"):
        open_predictions(store, pixels=[1])
    with pytest.raises(ValueError, match="order"):
        open_predictions(store, pixels=[1], order=13)


def test_cone_order_is_coarser_for_large_cones() -> None:
    assert skyquery.search_order(0.01, HEALPIX_ORDER) == HEALPIX_ORDER
    assert skyquery.search_order(5.0, HEALPIX_ORDER) < 8
    assert skyquery.search_order(180.0, HEALPIX_ORDER) == 1


def test_empty_store(tmp_path: Path) -> None:
    empty, _ = StarTable.build(obsid=[], ra=[], dec=[], snr_g=[], teff=[], logg=[], feh=[],
                               rv=[], class_=[], source_file=[])
    path = create_store(tmp_path / "e.zarr", empty, CHUNK)
    finalize(path)
    assert open_predictions(path).sizes["star"] == 0
    assert open_predictions(path, cone=(0, 0, 10)).sizes["star"] == 0


# --- stars without a sky position, names that are not UTF-8, masked SED pixels --------------

BAD_RA = [np.nan, -9999.0, 400.0, 10.0, 360.0]
BAD_DEC = [0.0, 0.0, 5.0, -95.0, 1.0]


def _with_bad_positions(stars: StarTable) -> tuple[StarTable, np.ndarray]:
    n = len(stars)
    extra = len(BAD_RA)
    obsid = np.r_[stars.obsid, np.arange(extra) + 5]      # smaller obsids than the others
    files = [*stars.source_file.tolist(), "spec-bad-0.fits",
             os.fsdecode(b"spec-\xff\xfe.fits"), *(f"spec-bad-{i}.fits" for i in (2, 3, 4))]
    return StarTable.build(
        obsid=obsid, ra=np.r_[stars.ra, BAD_RA], dec=np.r_[stars.dec, BAD_DEC],
        snr_g=np.r_[stars.snr_g, np.ones(extra)], teff=np.r_[stars.teff, np.ones(extra)],
        logg=np.r_[stars.logg, np.ones(extra)], feh=np.r_[stars.feh, np.ones(extra)],
        rv=np.r_[stars.rv, np.ones(extra)],
        class_=np.r_[stars.class_, ["STAR"] * extra], source_file=files)[0], np.arange(n)


def test_stars_without_position_follow_the_indexed_ones(tmp_path: Path,
                                                        stars: StarTable) -> None:
    table, _ = _with_bad_positions(stars)
    n, extra = len(stars), len(BAD_RA)
    assert table.n_indexed == n
    np.testing.assert_array_equal(table.healpix[n:], -1)
    np.testing.assert_array_equal(table.obsid[n:], np.arange(extra) + 5)   # by obsid
    assert np.isnan(table.ra[n:]).all() and np.isnan(table.dec[n:]).all()
    np.testing.assert_array_equal(table.healpix[:n], stars.healpix)
    # a table with a -1 before an indexed star is refused
    cols = {f: getattr(table, f) for f in table.__dataclass_fields__}
    cols["healpix"] = np.r_[-1, table.healpix[1:]]
    with pytest.raises(ValueError, match="without a position last"):
        StarTable(**cols)

    path = create_store(tmp_path / "p.zarr", table, CHUNK)
    write_block(path, 0, len(table), np.ones((len(table), 574)), np.ones((len(table), 574)),
                np.zeros(len(table)), n_masked_sed=np.arange(len(table)) % 5)
    finalize(path)
    g = zarr.open_group(str(path), mode="r")
    lo, hi = g["chunk_healpix_min"][:], g["chunk_healpix_max"][:]
    last = (n - 1) // CHUNK
    assert hi[last] == table.healpix[n - 1] and lo[last] == table.healpix[last * CHUNK]
    assert (lo[last + 1:] == -1).all() and (hi[last + 1:] == -1).all()
    ds = open_predictions(path)
    assert ds.attrs["healpix"]["n_indexed"] == n
    assert ds.attrs["format_version"] == 3
    no_position = ds.isel(star=ds.healpix.values < 0)
    assert no_position.obsid.values.tolist() == list(range(5, 5 + extra))
    assert no_position.source_file.values.tolist()[1] == "spec-\\xff\\xfe.fits"
    np.testing.assert_array_equal(ds.n_masked_sed.values, np.arange(len(table)) % 5)
    assert ds.n_masked_sed.dtype == np.int16 and "description" in ds.n_masked_sed.attrs
    # sky queries run and never return them; a pixel query neither
    for cone in CONES:
        got = query_indices(path, cone=cone)
        assert (got < n).all()
        np.testing.assert_array_equal(got, query_indices(store_path(tmp_path, stars), cone=cone))
    assert open_predictions(path, cone=(10.0, -89.0, 180.0)).sizes["star"] == n
    pix = np.unique(table.healpix[:n] >> 2 * HEALPIX_ORDER)
    assert open_predictions(path, pixels=pix, order=0).sizes["star"] == n


def store_path(tmp_path: Path, stars: StarTable) -> Path:
    """A store of ``stars`` alone (same chunks), for comparing query answers."""
    path = tmp_path / "plain.zarr"
    if not path.exists():
        create_store(path, stars, CHUNK)
    return path


def test_only_bad_positions(tmp_path: Path) -> None:
    table, _ = StarTable.build(obsid=[3, 1], ra=[np.nan, 500.0], dec=[0.0, 0.0], snr_g=[1, 1],
                               teff=[1, 1], logg=[1, 1], feh=[1, 1], rv=[1, 1],
                               class_=["", ""], source_file=["a", "b"])
    assert table.obsid.tolist() == [1, 3] and table.n_indexed == 0
    path = create_store(tmp_path / "p.zarr", table, 1)
    assert open_predictions(path, cone=(0.0, 0.0, 180.0)).sizes["star"] == 0


def test_failures_with_names_that_are_not_utf8(tmp_path: Path, stars: StarTable) -> None:
    name = os.fsdecode(b"/data/spec-\xff.fits")
    path = create_store(tmp_path / "p.zarr", stars, CHUNK)
    write_failures(path, [name], [f"{name}: truncated"])
    assert read_failures(path) == (["/data/spec-\\xff.fits"], ["/data/spec-\\xff.fits: truncated"])
    assert printable("plain é ✓") == "plain é ✓"
    assert printable("\ud800x") == "\\ud800x"     # not from a file name: escaped as it is


def test_n_masked_sed_is_checked(tmp_path: Path, stars: StarTable) -> None:
    path = create_store(tmp_path / "p.zarr", stars, CHUNK)
    z = np.zeros((CHUNK, 574))
    with pytest.raises(ValueError, match="n_masked_sed"):
        write_block(path, 0, CHUNK, z, z, np.zeros(CHUNK), n_masked_sed=np.zeros(3))
    with pytest.raises(ValueError, match="n_masked_sed must lie in"):
        write_block(path, 0, CHUNK, z, z, np.zeros(CHUNK), n_masked_sed=np.full(CHUNK, 575))
    write_block(path, 0, CHUNK, z, z, np.zeros(CHUNK))     # default: 0
    assert (open_predictions(path).n_masked_sed.values == 0).all()


# --- header magnitudes (format 3) and older stores -------------------------------------------

def test_header_mag_written_per_chunk_and_seen_by_xarray(tmp_path: Path,
                                                         stars: StarTable) -> None:
    path = create_store(tmp_path / "p.zarr", stars, CHUNK)
    n, nb = len(stars), len(HEADER_BANDS)
    mags = np.arange(2 * CHUNK * nb, dtype=np.float32).reshape(2 * CHUNK, nb) / 100 + 10
    z = np.zeros((CHUNK, 574))
    write_block(path, CHUNK, 3 * CHUNK, np.zeros((2 * CHUNK, 574)), np.zeros((2 * CHUNK, 574)),
                np.zeros(2 * CHUNK), header_mag=mags)
    write_block(path, 0, CHUNK, z, z, np.zeros(CHUNK))          # none given: left NaN
    with pytest.raises(ValueError, match="header_mag must be"):
        write_block(path, 0, CHUNK, z, z, np.zeros(CHUNK), header_mag=np.zeros((CHUNK, 5)))
    finalize(path)
    assert FORMAT_VERSION == 3
    ds = open_predictions(path)
    assert ds.attrs["format_version"] == FORMAT_VERSION
    assert ds.header_mag.dims == ("star", "header_band") and ds.header_mag.dtype == np.float32
    assert ds.sizes["header_band"] == nb and "header_band" in ds.coords
    assert ds.header_band.values.tolist() == list(HEADER_BANDS)
    assert ds.header_mag.attrs["units"] == "mag"
    assert "csstflux.io.formats.lamost_photometry" in ds.header_mag.attrs["long_name"]
    got = ds.header_mag.values
    assert np.isnan(got[:CHUNK]).all() and np.isnan(got[3 * CHUNK:]).all()
    np.testing.assert_array_equal(got[CHUNK:3 * CHUNK], mags)
    np.testing.assert_array_equal(ds.header_mag.sel(header_band="sdss_g").values[CHUNK:3 * CHUNK],
                                  mags[:, HEADER_BANDS.index("sdss_g")])
    assert n > 3 * CHUNK
    # a sky selection keeps the band coordinate and the rows of the selected stars
    cone = CONES[0]
    idx = query_indices(path, cone=cone)
    sub = open_predictions(path, cone=cone, dask=False)
    assert sub.header_band.values.tolist() == list(HEADER_BANDS)
    np.testing.assert_array_equal(sub.header_mag.values, got[idx])


def test_format_2_store_still_opens_and_queries(tmp_path: Path, stars: StarTable) -> None:
    """A store written before header_mag existed (format 2: no header_mag, no header_band)."""
    path = create_store(tmp_path / "old.zarr", stars, CHUNK)
    write_block(path, 0, CHUNK, np.ones((CHUNK, 574)), np.ones((CHUNK, 574)), np.zeros(CHUNK))
    g = zarr.open_group(str(path), mode="r+")
    del g["header_mag"]
    del g["header_band"]
    g.attrs["format_version"] = 2
    write_failures(path, ["a.fits"], ["truncated"])
    finalize(path, {"completed": "then"})
    ds = open_predictions(path)
    assert "header_mag" not in ds and "header_band" not in ds.dims
    assert ds.attrs["format_version"] == 2 and ds.sizes["star"] == len(stars)
    assert (ds.sed.values[:CHUNK] == 1).all()
    cone = CONES[0]
    np.testing.assert_array_equal(open_predictions(path, cone=cone).obsid.values,
                                  stars.obsid[query_indices(path, cone=cone)])
    assert read_failures(path) == (["a.fits"], ["truncated"])
