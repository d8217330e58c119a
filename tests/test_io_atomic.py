"""The one atomic writer for files and the one for folders, and the stores built on them."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from csstflux.errors import StoreError
from csstflux.io import atomic
from csstflux.io.stores.arrays import load_arrays, save_arrays
from csstflux.io.stores.flatcube import read_flat_zarr, write_flat_fits, write_flat_zarr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[int]:
    """The process umask, set to 0o027 for the test (products get 0o640 / 0o750)."""
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# --- files -----------------------------------------------------------------------------------

def test_write_bytes_and_text(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "a.json"
    assert atomic.write_text(target, '{"é": 1}\n') == target
    assert target.read_bytes() == '{"é": 1}\n'.encode()
    assert _mode(target) == 0o666 & ~umask   # as open() makes it, not mkstemp's 0o600
    atomic.write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert os.listdir(tmp_path) == ["a.json"]
    with pytest.raises(ValueError, match="mode"):
        with atomic.atomic_write(target, "a"):
            pass


@pytest.mark.parametrize("where", ["body", "replace"])
def test_failed_write_keeps_old_file_and_leaves_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    if where == "replace":
        def no_replace(src: str, dst: str) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises((RuntimeError, OSError)):
        with atomic.atomic_write(target, "w") as fh:
            fh.write("new, half written")
            if where == "body":
                raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_path_for_writers_that_want_a_name(tmp_path: Path) -> None:
    target = tmp_path / "m.npz"
    with atomic.atomic_path(target, suffix=".npz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".m.npz.")
        assert tmp.name.endswith(".partial.npz") and tmp.is_file()
        np.savez(tmp, x=np.arange(3))
        assert not target.exists()
    np.testing.assert_array_equal(np.load(target)["x"], np.arange(3))
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"junk")
        raise RuntimeError
    np.testing.assert_array_equal(np.load(target)["x"], np.arange(3))
    assert os.listdir(tmp_path) == ["m.npz"]


def test_two_writers_of_one_target_use_different_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "0000001.json"
    with atomic.atomic_write(target, "w") as a, atomic.atomic_write(target, "w") as b:
        assert a.name != b.name
        names = {Path(a.name).name, Path(b.name).name}
        assert all(n.startswith(".0000001.json.") and n.endswith(".partial") for n in names)
        # a reader listing the finished markers (glob "*.json") does not see them
        assert list(tmp_path.glob("*.json")) == []
        a.write("a")
        b.write("b")
    assert target.read_text() == "a"   # the last to close wins, whole
    assert os.listdir(tmp_path) == ["0000001.json"]


def test_save_arrays_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "coeffs.npz"
    save_arrays(path, {"a": np.arange(4.0)}, {"kind": "x"})

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="No space"):
        save_arrays(path, {"a": np.zeros(4)}, {"kind": "y"})
    arrays, meta = load_arrays(path)
    np.testing.assert_array_equal(arrays["a"], np.arange(4.0))
    assert meta == {"kind": "x"} and os.listdir(tmp_path) == ["coeffs.npz"]


# --- folders ---------------------------------------------------------------------------------

def _folder(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "sub").mkdir()
    (path / "sub" / "data.txt").write_text(text)
    return path


def test_atomic_dir_builds_then_replaces(tmp_path: Path, umask: int) -> None:
    final = tmp_path / "store.zarr"
    with atomic.atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".store.zarr.")
        assert tmp.name.endswith(".partial") and not final.exists()
        (tmp / "a.txt").write_text("one")
    assert _tree(final) == {"a.txt": b"one"}
    assert _mode(final) == 0o777 & ~umask   # as mkdir() makes it, not mkdtemp's 0o700
    with atomic.atomic_dir(final) as tmp:
        (tmp / "b.txt").write_text("two")
        assert _tree(final) == {"a.txt": b"one"}   # the old one stays until the end
    assert _tree(final) == {"b.txt": b"two"}
    assert os.listdir(tmp_path) == ["store.zarr"]   # nothing moved aside is left


def test_failed_build_keeps_old_folder(tmp_path: Path) -> None:
    final = _folder(tmp_path / "v1", "old")
    with pytest.raises(RuntimeError), atomic.atomic_dir(final) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("killed")
    assert _tree(final) == {"sub/data.txt": b"old"}
    assert os.listdir(tmp_path) == ["v1"]


def test_old_folder_moved_aside_until_new_one_is_in_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = _folder(tmp_path / "flat.zarr", "old")
    new = _folder(tmp_path / "new", "new")
    real_rename = os.rename
    seen: list[str] = []

    def watch(src: str | Path, dst: str | Path) -> None:
        if Path(src) == new:
            # the old folder still exists, whole, under a '.old' name beside the target
            aside = [p for p in tmp_path.iterdir() if p.name.endswith(".old")]
            assert len(aside) == 1 and aside[0].name.startswith(".flat.zarr.")
            assert _tree(aside[0] / "flat.zarr") == {"sub/data.txt": b"old"}
            seen.append("checked")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", watch)
    atomic.replace_dir(new, final)
    assert seen == ["checked"]
    assert _tree(final) == {"sub/data.txt": b"new"}
    assert sorted(os.listdir(tmp_path)) == ["flat.zarr"]


def _fail_renames_of_new(monkeypatch: pytest.MonkeyPatch, code: int, message: str) -> None:
    """``os.rename`` fails for a new (``.partial``) folder being moved into place."""
    real_rename = os.rename

    def fail_new(src: str | Path, dst: str | Path) -> None:
        if Path(src).name.endswith(".partial"):
            raise OSError(code, message)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", fail_new)


def test_failing_rename_moves_old_folder_back(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    final = _folder(tmp_path / "flat.zarr", "old")
    _fail_renames_of_new(monkeypatch, errno.EIO, "Input/output error")
    with pytest.raises(OSError, match="Input/output"), atomic.atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _tree(final) == {"sub/data.txt": b"old"}
    assert os.listdir(tmp_path) == ["flat.zarr"]   # the temporary and the '.old' are gone


def test_old_folder_that_cannot_be_moved_back_is_named(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    final = _folder(tmp_path / "v", "old")
    new = _folder(tmp_path / "n", "new")
    real_rename = os.rename

    def fail_both(src: str | Path, dst: str | Path) -> None:
        if Path(src) == new or Path(src).parent.name.endswith(".old"):
            raise OSError(errno.EIO, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", fail_both)
    with pytest.raises(StoreError, match=r"the old one is at .*\.old") as info:
        atomic.replace_dir(new, final)
    aside = Path(str(info.value).rsplit("the old one is at ", 1)[1])
    assert _tree(aside) == {"sub/data.txt": b"old"}   # never deleted


def test_discard_leftovers_only_of_that_target(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.mkdir()
    left = [tmp_path / ".x.abcd_123.partial", tmp_path / ".x.zz9zz9zz.old"]
    for p in left:
        p.mkdir()
    (tmp_path / ".x.k3j4h5g6.partial").write_text("a killed file writer's")
    kept = [tmp_path / ".x.zarr.abcdefgh.partial", tmp_path / "x.partial", tmp_path / ".x.ab.old"]
    for p in kept:
        p.mkdir()
    removed = atomic.discard_leftovers(target)
    assert sorted(p.name for p in removed) == sorted(
        [".x.abcd_123.partial", ".x.zz9zz9zz.old", ".x.k3j4h5g6.partial"])
    assert sorted(os.listdir(tmp_path)) == sorted(["x", *(p.name for p in kept)])


# --- the flat cube: replaced only once the new one is complete -------------------------------

def _cube(value: float) -> tuple[dict, ...]:
    flats = {"GV-1": np.full((2, 3, 4), value)}
    return (flats, {"GV-1": np.full((2, 3, 4), 0.01)},
            {"GV-1": np.array([5000.0, 5010.0])})


def test_flat_cube_replaced_only_when_complete(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "flat.zarr"
    gx, gy = np.arange(4.0), np.arange(3.0)
    flats, sigmas, waves = _cube(1.0)
    write_flat_zarr(path, flats, sigmas, waves, gx, gy, {}, {"order": 2})
    flats2, sigmas2, waves2 = _cube(2.0)
    write_flat_zarr(path, flats2, sigmas2, waves2, gx, gy, {}, {"order": 3})
    cube, attrs = read_flat_zarr(path)
    assert attrs["order"] == 3 and np.all(cube["GV-1"]["flat"] == 2.0)
    assert os.listdir(tmp_path) == ["flat.zarr"]

    _fail_renames_of_new(monkeypatch, errno.ENOSPC, "No space left on device")
    flats3, sigmas3, waves3 = _cube(3.0)
    with pytest.raises(OSError, match="No space"):
        write_flat_zarr(path, flats3, sigmas3, waves3, gx, gy, {}, {"order": 4})
    cube, attrs = read_flat_zarr(path)   # the previous cube, whole
    assert attrs["order"] == 3 and np.all(cube["GV-1"]["flat"] == 2.0)
    assert os.listdir(tmp_path) == ["flat.zarr"]


def test_flat_fits_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from astropy.io import fits

    path = tmp_path / "flat.fits"
    flats, _, waves = _cube(1.0)
    write_flat_fits(path, flats, waves, np.arange(4.0), np.arange(3.0), {"order": 2})
    with fits.open(path, checksum=True) as hdul:
        assert hdul["GV-1"].data.shape == (2, 3, 4) and hdul[0].header["ORDER"] == 2

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fits.HDUList, "writeto", boom)
    with pytest.raises(OSError, match="No space"):
        write_flat_fits(path, _cube(5.0)[0], waves, np.arange(4.0), np.arange(3.0), {})
    with fits.open(path) as hdul:
        assert np.all(hdul["GV-1"].data == 1.0)
    assert os.listdir(tmp_path) == ["flat.fits"]
