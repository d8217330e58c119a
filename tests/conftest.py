"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ``../shared/data`` next to the repository: real survey files, read-only, never copied in.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Directory of the real data files; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data directory {SHARED_DATA} not found")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dask_scheduler_address():
    """A session-scoped local Dask cluster (two single-threaded worker processes)."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address="127.0.0.1:0", host="127.0.0.1")
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
