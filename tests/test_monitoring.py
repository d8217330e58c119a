"""Monitoring of the Dask jobs: dashboard and Prometheus metrics on 127.0.0.1, tasks named by
stage, a performance report beside the outputs."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner
from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.utils import key_split
from prometheus_client.parser import text_string_to_metric_families
from test_pipeline_flats import field  # noqa: F401  (reused module fixture: a small field)

from csstflux.errors import ConfigError
from csstflux.pipeline.cluster import (
    PROMETHEUS_ROUTES,
    ClusterSettings,
    prometheus_config,
    start_cluster,
)

#: No proxy, whatever the environment says: the servers are on 127.0.0.1.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with OPENER.open(url, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def samples(text: str) -> dict[str, list]:
    """Prometheus exposition text → sample name → samples (parsed by prometheus_client)."""
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def worker_http_ports(handle) -> list[int]:
    return [w["services"]["dashboard"] for w in handle.client.scheduler_info()["workers"].values()]


def test_dashboard_and_metrics_served_on_loopback():
    handle = start_cluster(ClusterSettings(workers=1, dashboard_address="127.0.0.1:0"))
    try:
        assert handle.dashboard.startswith("http://127.0.0.1:")
        assert handle.dashboard.endswith("/status")
        status, ctype, body = get(handle.dashboard)
        assert status == 200 and ctype.startswith("text/html") and "<html" in body.lower()
        status, ctype, body = get(handle.metrics)
        assert status == 200 and ctype.startswith("text/plain")
        m = samples(body)
        workers = {s.labels["state"]: s.value for s in m["dask_scheduler_workers"]}
        assert sum(workers.values()) == 1.0 and "idle" in workers
        assert m["dask_scheduler_workers_added_total"][0].value == 1.0
        assert "dask_scheduler_tasks" in m
        (port,) = worker_http_ports(handle)
        status, _, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert samples(body)["dask_worker_threads"][0].value == 1.0  # threads_per_worker=1
    finally:
        handle.close()


def test_prometheus_can_be_switched_off():
    handle = start_cluster(ClusterSettings(workers=1, dashboard_address="127.0.0.1:0",
                                           prometheus=False))
    try:
        assert get(handle.dashboard)[0] == 200  # the dashboard stays
        assert get(handle.metrics)[0] == 404
        (port,) = worker_http_ports(handle)  # the worker process got the setting too
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 404
        assert get(f"http://127.0.0.1:{port}/health")[0] == 200
    finally:
        handle.close()


def test_prometheus_switch_settings(monkeypatch):
    assert prometheus_config(None) == {}
    off, on = prometheus_config(False), prometheus_config(True)
    for key, module in PROMETHEUS_ROUTES.items():
        assert module not in off[key] and on[key][0] == module
        assert set(on[key]) == set(off[key]) | {module}
    with pytest.raises(ValueError, match="running scheduler"):
        ClusterSettings(scheduler="tcp://127.0.0.1:1", prometheus=False)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(ConfigError, match="prometheus-client"):
        prometheus_config(True)


class KeyRecorder(SchedulerPlugin):
    """Records, per client, the keys of the tasks each client submits to the scheduler."""

    name = "csstflux-test-key-recorder"

    def __init__(self) -> None:
        self.keys: dict[str, list[str]] = {}

    def update_graph(self, scheduler, *, client, tasks, **kwargs):
        # ``tasks`` also lists the futures a new task depends on: keys repeat across calls
        self.keys.setdefault(client, []).extend(str(k) for k in tasks)


@pytest.mark.slow
def test_build_flat_names_tasks_by_stage_and_saves_a_report(
        field, dask_scheduler_address, tmp_path):  # noqa: F811
    from csstflux.cli.main import cli

    d, _ = field
    with Client(dask_scheduler_address) as client:
        client.register_plugin(KeyRecorder())
        try:
            res = CliRunner().invoke(cli, [
                "build-flat", "--exposures", str(d / "exp"), "--predictions",
                str(d / "pred.zarr"), "--out", str(tmp_path / "out" / "cube"), "--max-iter", "0",
                "--scheduler", dask_scheduler_address, "--json"])
            assert res.exit_code == 0, res.output
            by_client = client.run_on_scheduler(
                lambda dask_scheduler: dask_scheduler.plugins[KeyRecorder.name].keys)
            prefixes = client.run_on_scheduler(
                lambda dask_scheduler: set(dask_scheduler.task_prefixes))
        finally:
            client.unregister_scheduler_plugin(KeyRecorder.name)
    summary = json.loads(res.stdout)
    # the job's own tasks (its client's, not those of worker clients) are named by stage
    keys = {k for c, ks in by_client.items() if not c.startswith("Client-worker-") for k in ks}
    assert keys and all(k.startswith("flat-") for k in keys), keys
    stages = {key_split(k) for k in keys}
    assert {"flat-equations", "flat-reduce"} <= stages <= prefixes  # the dashboard's groups
    # one equations task per exposure and pass, the pass in the name (3 exposures, 1 pass),
    # and a two-level tree reduction of them
    assert sum(k.startswith("flat-equations-p0-") for k in keys) == 3
    assert not any(k.startswith("flat-equations-p1-") for k in keys)
    assert any(k.startswith("flat-reduce-p0-L2-") for k in keys)
    report = tmp_path / "out" / "cube.performance.html"
    assert summary["performance_report"] == str(report)
    text = report.read_text()
    assert text.lstrip().lower().startswith("<!doctype html") and "Dask Performance" in text
    # readable offline: Bokeh inline, no script fetched from a CDN
    import re

    assert not re.findall(r'<script[^>]+src="https?://', text)
    assert summary["dashboard"].startswith("http://")
