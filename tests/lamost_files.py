"""Small LAMOST LRS files for tests, written in the real formats by csstflux's own writer.

A smooth continuum on the LAMOST grid with Gaussian noise at a chosen S/N per arm (blue below,
red above 5800 Å), optionally a red arm scaled (a broken arm) or a wavelength row that differs
from the header's WCS.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from csstflux.io import validate as quality
from csstflux.io.fits.lamost_writer import write_lrs

#: The LAMOST LRS grid: log10 λ = COEFF0 + COEFF1 k, 3909 pixels.
COEFF0, COEFF1, N_PIX = 3.5682, 1e-4, 3909
WAVE = 10 ** (COEFF0 + COEFF1 * np.arange(N_PIX))


def write(path: str | Path | bytes, *, layout: str = "image",
          snr: tuple[float, float] = (50.0, 50.0), red_scale: float = 1.0,
          wave: np.ndarray = WAVE, header: dict[str, Any] | None = None,
          snr_keys: bool = True, seed: int = 0) -> Path:
    """A LAMOST file with a smooth continuum (1000 at 5800 Å), blue arm at S/N ``snr[0]`` and
    red arm at ``snr[1]`` (split at 5800 Å), the red arm's flux scaled by ``red_scale``
    (its S/N kept), the row ``wave`` (the header states the LAMOST grid when the writer finds
    ``wave`` log-linear, or what ``header`` says). The header states SNRG/SNRR = ``snr``
    unless ``snr_keys`` is False. ``path`` may be bytes (a name that is not UTF-8)."""
    rng = np.random.default_rng(seed)
    cont = 1000.0 * (WAVE / 5800.0) ** -1.5
    red = WAVE > quality.ARM_SPLIT
    sigma = cont / np.where(red, snr[1], snr[0])
    flux = cont + sigma * rng.standard_normal(N_PIX)
    flux = np.where(red, flux * red_scale, flux)
    sigma = np.where(red, sigma * red_scale, sigma)
    hdr: dict[str, Any] = {"OBSID": 7, "RA": 10.0, "DEC": 20.0, "CLASS": "STAR",
                           "DATA_V": "LAMOST DR9" if layout == "coadd" else "LAMOST DR7"}
    if snr_keys:
        hdr.update(SNRG=snr[0], SNRR=snr[1])
    hdr.update(header or {})
    zeros = np.zeros(N_PIX, np.int32)
    if not isinstance(path, bytes):
        return write_lrs(path, wave, flux, 1 / sigma**2, zeros, zeros, hdr, layout=layout)
    # cfitsio (the writer) takes UTF-8 names only: write under one, then rename
    suffix = ".fits.gz" if path.endswith(b".gz") else ".fits"
    tmp = Path(os.fsdecode(os.path.dirname(path))) / f"tmp-utf8{suffix}"
    write_lrs(tmp, wave, flux, 1 / sigma**2, zeros, zeros, hdr, layout=layout)
    os.replace(os.fsencode(tmp), path)
    return Path(os.fsdecode(path))
