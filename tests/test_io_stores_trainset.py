"""The Zarr training store: round trip, lazy row reads, refusal to overwrite, grid checks."""

import numpy as np
import pytest
import zarr

from csstflux.errors import GridMismatchError, StoreError
from csstflux.grids import INPUT_GRID, OUTPUT_GRID
from csstflux.io.stores.trainset import TrainingArrays, TrainStore, write_trainstore


def make(n, rng):
    return TrainingArrays(
        inputs=rng.normal(1, 0.1, (n, INPUT_GRID.n)),
        input_mask=rng.random((n, INPUT_GRID.n)) < 0.01,
        targets=rng.uniform(0.1, 2, (n, OUTPUT_GRID.n)),
        target_mask=rng.random((n, OUTPUT_GRID.n)) < 0.1,
        teff=rng.uniform(5000, 9000, n), logg=rng.uniform(1, 5, n), feh=rng.uniform(-2, 0.5, n),
        split=rng.integers(0, 3, n).astype(np.int8), subset=np.array(["grid"] * n),
        name=np.array([f"s{i}" for i in range(n)]), attrs={"builder": {"seed": 1}})


def test_round_trip_and_rows(tmp_path):
    rng = np.random.default_rng(0)
    data = make(50, rng)
    path = write_trainstore(tmp_path / "t.zarr", data, chunk_rows=16)
    store = TrainStore(path)
    assert len(store) == 50
    back = store.load()
    np.testing.assert_array_equal(back.inputs, data.inputs.astype(np.float32))
    np.testing.assert_array_equal(back.target_mask, data.target_mask)
    assert back.name.tolist() == data.name.tolist()
    assert store.attrs["builder"] == {"seed": 1}
    idx = np.array([40, 3, 17])
    part = store.load(idx)
    np.testing.assert_array_equal(part.targets, data.targets[idx].astype(np.float32))
    assert part.name.tolist() == ["s40", "s3", "s17"]
    np.testing.assert_array_equal(store.load(data.split == 1).teff, data.teff[data.split == 1])
    # rows read back (string columns come back as numpy StringDType) can be written again
    again = TrainStore(write_trainstore(tmp_path / "again.zarr", part)).load()
    assert again.name.tolist() == ["s40", "s3", "s17"] and again.subset.tolist() == ["grid"] * 3


def test_refuses_overwrite_and_bad_grid(tmp_path):
    rng = np.random.default_rng(1)
    p = write_trainstore(tmp_path / "t.zarr", make(4, rng))
    with pytest.raises(StoreError, match="exists"):
        write_trainstore(p, make(4, rng))
    write_trainstore(p, make(5, rng), overwrite=True)
    assert len(TrainStore(p)) == 5
    g = zarr.open_group(str(p), mode="r+")
    g.attrs["output_grid"] = {"n": 575, "start": 2500.0, "dlnlambda": 0.0025}
    with pytest.raises(GridMismatchError, match="output_grid"):
        TrainStore(p)
    with pytest.raises(GridMismatchError):
        TrainingArrays(**{**make(2, rng).__dict__, "targets": np.ones((2, 10))})
    with pytest.raises(StoreError, match="no training store"):
        TrainStore(tmp_path / "missing.zarr")
