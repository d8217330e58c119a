"""Exposure groups: the writer's completion record, and check_exposure on whole, half-written
and older (unrecorded) groups, including realistic ones whose all-NaN chunks Zarr never stores."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import zarr

from csstflux.flat.detectors import SLITLESS_FOCAL_PLANE
from csstflux.flat.fit import band_pixels
from csstflux.grids import BANDS, OUTPUT_GRID
from csstflux.io.formats.csst_throughput import load_band_throughputs, throughput_on_grid
from csstflux.io.stores import exposures
from csstflux.io.stores.exposures import (
    COMPLETE,
    STORED_ARRAYS,
    Exposure,
    list_exposures,
    read_exposure,
    write_exposure,
)
from csstflux.io.stores.nights import check_exposure

#: 400 sources per detector (a realistic field): counts of shape (1200, 574) are stored in
#: Zarr's default (300, 287) chunks, and the GU rows' red half and the GI rows' blue half are
#: all NaN: 6 of 8 chunks stored.
N_PER_DET = 400
DETECTORS = tuple(SLITLESS_FOCAL_PLANE.band(b)[0] for b in ("GU", "GV", "GI"))


def _field(throughput: dict[str, np.ndarray], n_per_det: int = N_PER_DET,
           seed: int = 0) -> Exposure:
    """An exposure of ``n_per_det`` sources per detector, counts NaN outside each band."""
    rng = np.random.default_rng(seed)
    n = n_per_det * len(DETECTORS)
    inband = np.repeat([band_pixels(throughput[d.band]) for d in DETECTORS], n_per_det, axis=0)
    counts = np.where(inband, rng.uniform(100.0, 1000.0, (n, OUTPUT_GRID.n)), np.nan)
    return Exposure(
        exposure_id=7, id=np.arange(n, dtype=np.int64) + 1000,
        ra=rng.uniform(149.0, 151.0, n), dec=rng.uniform(1.0, 3.0, n),
        detector=np.repeat([d.name for d in DETECTORS], n_per_det),
        x=rng.uniform(0, 4000, n), y=rng.uniform(0, 4000, n), scale=rng.uniform(10, 1000, n),
        counts=counts.astype(np.float32), counts_err=np.sqrt(counts).astype(np.float32),
        throughput={d.name: throughput[d.band] for d in DETECTORS},
        pointing=(150.0, 2.0, 0.0), exposure_time=150.0, attrs={"seed": seed})


@pytest.fixture(scope="module")
def real_throughput(shared_data):
    """The CESS first-order slitless throughputs on OUTPUT_GRID, band → (574,)."""
    curves = load_band_throughputs(shared_data / "csst" / "csst_sls_tp")
    return {b: throughput_on_grid(w, s) for b, (w, s) in curves.items()}


#: Top-hat throughputs over the bands (no shared data needed): the same NaN pattern.
TOPHAT = {b: np.where(BANDS[b].mask(OUTPUT_GRID.wavelength), 0.3, 0.0) for b in BANDS}


def _edit_attrs(path, edit):
    """Rewrite the group's ``zarr.json`` attributes with ``edit(attrs)`` (in place)."""
    meta = json.loads((path / "zarr.json").read_text())
    edit(meta["attributes"])
    (path / "zarr.json").write_text(json.dumps(meta))


def _strip_record(path):
    """Remove the completion record: what a writer from before the record left."""
    def strip(attrs):
        del attrs[COMPLETE], attrs[STORED_ARRAYS]

    _edit_attrs(path, strip)


def _stored_chunks(path, name):
    """The chunk files of array ``name`` that are in the store, sorted."""
    return sorted(q for q in (path / name / "c").rglob("*") if q.is_file())


def test_realistic_field_leaves_nan_chunks_unstored_and_is_accepted(real_throughput, tmp_path):
    exp = _field(real_throughput)
    p = write_exposure(tmp_path, exp)
    g = zarr.open_group(str(p), mode="r", zarr_format=3)
    for name in ("counts", "counts_err"):   # the bug's premise: Zarr skipped all-NaN chunks
        assert g[name].nchunks_initialized < g[name].nchunks, name
    assert g.attrs[COMPLETE] is True
    assert g.attrs[STORED_ARRAYS] == {
        name: {"shape": list(arr.shape), "chunks": arr.nchunks_initialized}
        for name, arr in g.arrays()}
    assert check_exposure(p) is None

    # the chunks never stored read back as the fill value, NaN: exactly what was written
    back = read_exposure(p)
    np.testing.assert_array_equal(back.counts, exp.counts)       # NaN where NaN
    np.testing.assert_array_equal(back.counts_err, exp.counts_err)
    assert np.isnan(back.counts[:N_PER_DET, OUTPUT_GRID.n // 2:]).all()   # a GU row, red half


def _drop_chunk(p):
    _stored_chunks(p, "counts")[0].unlink()


def _extra_chunk(p):
    """A chunk where the writer stored none (left over from an older copy)."""
    c = p / "counts" / "c"
    stored = _stored_chunks(p, "counts")
    grid = [c / str(i) / str(j) for i in range(4) for j in range(2)]   # (300, 287) chunks
    shutil.copy(stored[0], next(q for q in grid if q not in stored))


def _shape(attrs):
    attrs[STORED_ARRAYS]["x"]["shape"] = [5]


HALF_WRITTEN = {
    "marker missing": (_strip_record, "no completion marker"),
    "marker false": (lambda p: _edit_attrs(p, lambda a: a.update({COMPLETE: False})),
                     "is False, not true"),
    "record missing": (lambda p: _edit_attrs(p, lambda a: a.pop(STORED_ARRAYS)),
                       "without its 'stored_arrays' record"),
    "chunk missing": (_drop_chunk, "'counts' is incomplete: 5 of the 6 chunks written"),
    "chunk extra": (_extra_chunk, "'counts' has 7 chunks, the writer stored 6"),
    "array missing": (lambda p: shutil.rmtree(p / "counts_err"), "'counts_err' missing"),
    "array metadata missing": (lambda p: (p / "x" / "zarr.json").unlink(), "'x' missing"),
    "shape differs": (lambda p: _edit_attrs(p, _shape), "the writer recorded [5]"),
    "group metadata missing": (lambda p: (p / "zarr.json").unlink(), "not a readable"),
}


@pytest.mark.parametrize("case", sorted(HALF_WRITTEN))
def test_half_written_exposures_are_skipped(case, tmp_path):
    """A copy in progress or broken: the marker missing, or arrays partly missing."""
    p = write_exposure(tmp_path, _field(TOPHAT))
    assert check_exposure(p) is None
    damage, reason = HALF_WRITTEN[case]
    damage(p)
    problem = check_exposure(p)
    assert problem is not None and reason in problem, problem


def test_exposures_without_marker_need_every_chunk(tmp_path):
    """Groups of an older writer: accepted when every chunk is stored (as before), skipped
    with a reason naming the missing marker and the rewrite otherwise; the rewrite passes."""
    whole = write_exposure(tmp_path / "a", _field(TOPHAT, n_per_det=100))   # chunks span λ
    _strip_record(whole)
    assert check_exposure(whole) is None

    holes = write_exposure(tmp_path / "b", _field(TOPHAT))
    _strip_record(holes)
    problem = check_exposure(holes)
    assert problem is not None and "no completion marker" in problem
    assert "6 of 8 chunks" in problem and "write_exposure(folder, read_exposure(path))" in problem
    write_exposure(holes.parent, read_exposure(holes))
    assert check_exposure(holes) is None


def test_writer_that_dies_leaves_no_exposure(tmp_path, monkeypatch):
    """The record is the writer's last step: if it fails, no exposure appears and the
    temporary folder is removed; an exposure already there is left as it was."""
    def boom(group):
        raise RuntimeError("disk full")

    monkeypatch.setattr(exposures, "stored_arrays", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_exposure(tmp_path, _field(TOPHAT, n_per_det=10))
    assert list_exposures(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    old = write_exposure(tmp_path, _field(TOPHAT, n_per_det=10))
    before = sorted(q.relative_to(old) for q in old.rglob("*"))
    monkeypatch.setattr(exposures, "stored_arrays", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_exposure(tmp_path, _field(TOPHAT, n_per_det=10))
    assert [q.name for q in tmp_path.iterdir()] == [old.name]
    assert sorted(q.relative_to(old) for q in old.rglob("*")) == before
    assert check_exposure(old) is None


def test_ebv_and_photon_conversion_round_trip_and_older_groups(tmp_path):
    """``ebv`` and ``counts_per_flux`` read back as written (an all-zero ``ebv`` is stored);
    a group without them (an older writer's, or relative units) reads as E = 0, no conversion."""
    from dataclasses import replace

    from csstflux.flat.simulate import counts_per_flux
    from csstflux.io.stores.exposures import read_exposure_attrs

    exp = _field(TOPHAT, n_per_det=20)
    phys = replace(exp, ebv=np.linspace(0.0, 0.4, len(exp)), counts_per_flux=counts_per_flux())
    back = read_exposure(write_exposure(tmp_path / "p", phys))
    np.testing.assert_array_equal(back.ebv, phys.ebv)
    np.testing.assert_array_equal(back.counts_per_flux, counts_per_flux())
    assert back.attrs["units"] == "physical"
    p = write_exposure(tmp_path / "r", exp)
    assert read_exposure_attrs(p)["units"] == "relative" and check_exposure(p) is None
    assert zarr.open_group(str(p), mode="r")["ebv"].nchunks_initialized == 1
    shutil.rmtree(p / "ebv")                                   # an older writer's group
    _edit_attrs(p, lambda a: (a.pop("units"), a[STORED_ARRAYS].pop("ebv")))
    old = read_exposure(p)
    assert not old.ebv.any() and old.ebv.shape == (len(exp),) and old.counts_per_flux is None
    assert read_exposure_attrs(p)["units"] == "relative"
    with pytest.raises(ValueError, match="counts_per_flux"):
        replace(exp, counts_per_flux=np.ones(3))


def test_trace_arrays_round_trip_and_older_groups_read_without(tmp_path):
    """Traces, contamination and the CONTAMINATED mask read back as written, every chunk
    stored (so the completion record holds and check_exposure accepts the group); a group
    without them reads with None and positions that default to the single x, y."""
    exp = _field(TOPHAT, n_per_det=120)
    rng = np.random.default_rng(3)
    n = len(exp)
    inband = np.isfinite(exp.counts)
    xt = np.where(inband, exp.x[:, None] + np.arange(OUTPUT_GRID.n), np.nan).astype(np.float32)
    yt = np.where(inband, exp.y[:, None], np.nan).astype(np.float32)
    frac = np.where(inband, rng.uniform(0, 1e-3, (n, OUTPUT_GRID.n)) ** 2, np.nan)
    traced = replace(exp, x_trace=xt, y_trace=yt, contamination=frac.astype(np.float32),
                     contaminated=np.nan_to_num(frac) > 1e-7,
                     attrs={**exp.attrs, "extraction_resolution": {"GV-02": 250.0}})
    p = write_exposure(tmp_path / "t", traced)
    assert check_exposure(p) is None
    g = zarr.open_group(str(p), mode="r", zarr_format=3)
    for name in ("x_trace", "y_trace", "contamination", "contaminated"):
        assert g[name].nchunks_initialized == g[name].nchunks, name  # all-NaN chunks too
    back = read_exposure(p)
    assert back.traced
    for name in ("x_trace", "y_trace", "contamination", "contaminated"):
        np.testing.assert_array_equal(getattr(back, name), getattr(traced, name))
    x, y = back.positions([0, 5])
    np.testing.assert_array_equal(x, xt[[0, 5]].astype(float))
    assert back.extraction_resolution("GV-02") == 250.0
    assert back.extraction_resolution("GU-03") is None
    light = read_exposure(p, spectra=False)  # the census reads no trace array
    assert light.x_trace is None and light.contaminated is None
    old = read_exposure(write_exposure(tmp_path / "o", exp))
    assert not old.traced and old.contamination is None
    x, y = old.positions()
    np.testing.assert_array_equal(x, exp.x)
    with pytest.raises(ValueError, match="go together"):
        replace(exp, x_trace=xt)
    with pytest.raises(ValueError, match="contamination must be"):
        replace(exp, contamination=frac[:, :10])
