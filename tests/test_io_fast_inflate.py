"""The gzip inflaters of the FITS decoder (python-isal, zlib-ng, the standard library's zlib):
bytes identical to :func:`gzip.decompress`, and truncated or damaged streams refused the
same way whichever one runs."""

from __future__ import annotations

import gzip
import importlib
from pathlib import Path

import numpy as np
import pytest
from lamost_files import write

from csstflux.errors import InputFormatError, TruncatedFileError
from csstflux.io.fits import inflate
from csstflux.io.formats import lamost

INSTALLED = [n for n in inflate.INFLATER_NAMES if inflate.load_inflater(n) is not None]


@pytest.fixture(params=inflate.INFLATER_NAMES)
def inflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each inflater in turn as the decoder's choice (skipped where not installed)."""
    chosen = inflate.load_inflater(request.param)
    if chosen is None:
        pytest.skip(f"{request.param} is not installed")
    monkeypatch.setattr(inflate, "INFLATER", chosen)
    return str(request.param)


@pytest.fixture(scope="module")
def gz_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Demo-like LAMOST files in both layouts, gzipped by the writer."""
    d = tmp_path_factory.mktemp("gz")
    return [write(d / f"spec-{k}.fits.gz", layout=layout, seed=k)
            for k, layout in enumerate(("image", "coadd", "image"))]


def test_zlib_is_always_there_and_the_first_installed_is_chosen() -> None:
    assert "zlib" in INSTALLED
    assert inflate.INFLATER.name == INSTALLED[0] == inflate.preferred_inflater().name


@pytest.mark.parametrize(("missing", "expected"), [
    ({"isal.isal_zlib"}, "zlib-ng"), ({"isal.isal_zlib", "zlib_ng.zlib_ng"}, "zlib")])
def test_choice_falls_back_when_a_package_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                     missing: set[str], expected: str) -> None:
    real = importlib.import_module

    def without(name: str, *args: object) -> object:
        if name in missing:
            raise ImportError(f"no module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(inflate.importlib, "import_module", without)
    if expected not in INSTALLED:
        pytest.skip(f"{expected} is not installed")
    assert inflate.preferred_inflater().name == expected


def test_same_bytes_as_the_standard_library(inflater: str, gz_files: list[Path]) -> None:
    for path in gz_files:
        data = path.read_bytes()
        assert inflate.gunzip(data, path) == gzip.decompress(data)
    # members one after another, zero padding between and after them
    a, b = (p.read_bytes() for p in gz_files[:2])
    for data in (a + b, a + b"\0" * 7 + b + b"\0" * 3, a + gzip.compress(b"")):
        assert inflate.gunzip(data) == gzip.decompress(data)


def test_same_bytes_on_the_real_files(inflater: str, shared_data: Path) -> None:
    files = sorted((shared_data / "lamost").glob("*.fits.gz"))
    assert files
    for path in files:
        data = path.read_bytes()
        assert inflate.gunzip(data, path) == gzip.decompress(data)


def _damaged(data: bytes) -> dict[str, bytes]:
    def flip(pos: int, bit: int = 0x01) -> bytes:
        b = bytearray(data)
        b[pos] ^= bit
        return bytes(b)

    return {"crc": flip(len(data) - 6), "length": flip(len(data) - 2),
            "data": flip(len(data) // 2, 0xFF), "trailing bytes": data + b"\0\0junk",
            "trailing 1f": data + b"\x1f"}


def test_truncated_streams_are_refused(inflater: str, gz_files: list[Path]) -> None:
    data = gz_files[0].read_bytes()
    second = gz_files[1].read_bytes()
    for cut in (data[:2], data[:10], data[:len(data) // 2], data[:-8], data[:-4], data[:-1],
                data + second[:len(second) // 3], data + b"\x1f\x8b"):
        with pytest.raises(EOFError):            # the standard library agrees
            gzip.decompress(cut)
        with pytest.raises(TruncatedFileError, match="gzip stream ends early"):
            inflate.gunzip(cut, "f.fits.gz")


def test_damaged_streams_are_refused(inflater: str, gz_files: list[Path]) -> None:
    for what, data in _damaged(gz_files[0].read_bytes()).items():
        with pytest.raises(OSError):           # the standard library agrees (BadGzipFile)
            gzip.decompress(data)
        with pytest.raises(InputFormatError, match="corrupt gzip stream") as info:
            inflate.gunzip(data, "f.fits.gz")
        assert not isinstance(info.value, TruncatedFileError), what
        assert "f.fits.gz" in str(info.value), what


def test_reader_refuses_truncated_and_crc_damaged_files(inflater: str, gz_files: list[Path],
                                                        tmp_path: Path) -> None:
    data = gz_files[1].read_bytes()
    path = tmp_path / "spec-cut.fits.gz"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(TruncatedFileError, match="gzip stream ends early"):
        lamost.read(path)
    path.write_bytes(_damaged(data)["crc"])
    with pytest.raises(InputFormatError, match="corrupt gzip stream") as info:
        lamost.read(path)
    assert path.name in str(info.value)


def test_reader_gives_the_same_spectrum_with_every_inflater(monkeypatch: pytest.MonkeyPatch,
                                                            gz_files: list[Path]) -> None:
    spectra = {}
    for name in INSTALLED:
        monkeypatch.setattr(inflate, "INFLATER", inflate.load_inflater(name))
        spectra[name] = [lamost.read(p) for p in gz_files]
    for name, specs in spectra.items():
        for s, ref in zip(specs, spectra["zlib"], strict=True):
            for key in ("wavelength", "flux", "error", "mask"):
                np.testing.assert_array_equal(getattr(s, key), getattr(ref, key),
                                              err_msg=f"{name} {key}")
