"""The real thing: `serve` with granian and two worker processes on a free port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from messenger.topology import dump_topology
from tests.e2e.api.conftest import OPS, OPS_TOKEN, USERS_URL, lagging_replicas
from tests.support.ports import free_port
from tests.support.scratch import scratch_topology
from tests.support.servers import serving


@pytest.fixture(scope="module")
def server(cluster: Any) -> Iterator[tuple[str, int]]:
    with serving(cluster.topology_path, MESSENGER_OPS_TOKEN=OPS_TOKEN) as running:
        yield running


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(p) for p in (task / "children").read_text().split()]
    return children


def fresh_client(base: str) -> httpx.Client:
    """No keep-alive: every request opens a connection, so the kernel spreads them over the
    workers, as it does for many independent clients."""
    return httpx.Client(base_url=base, limits=httpx.Limits(max_keepalive_connections=0), timeout=5)


def test_serve_runs_two_worker_processes(server: tuple[str, int]) -> None:
    _, pid = server
    children = [Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ") for c in _children(pid)]
    assert len(children) == 2


def test_curl_style_client_reads_its_writes_across_workers_with_lagging_replicas(
    server: tuple[str, int], cluster: Any
) -> None:
    with lagging_replicas(cluster.topology), fresh_client(server[0]) as client:
        for i in range(10):
            created = client.post(USERS_URL + "/", json={"first_name": f"G{i}", "last_name": "Ranian"})
            assert created.status_code == 201, created.text
            url = created.headers["location"]
            assert client.get(url).json() == created.json()
            replaced = client.put(url, json={"first_name": "Put", "last_name": str(i)})
            assert client.get(url).json() == replaced.json()
            assert client.delete(url).status_code == 204
            assert client.get(url).status_code == 404


def test_metrics_add_up_the_requests_of_every_worker(server: tuple[str, int]) -> None:
    with fresh_client(server[0]) as client:
        before = _count_404(client.get("/metrics", headers=OPS).text)
        for _ in range(20):
            assert client.get("/granian-test/nothing").status_code == 404
        after = _count_404(client.get("/metrics", headers=OPS).text)
    assert after - before == 20


def _count_404(text: str) -> float:
    match = re.search(r'http_requests_total\{method="GET",route="unmatched",status="404"\} ([\d.e+]+)', text)
    return float(match.group(1)) if match else 0.0


def test_serve_refuses_to_start_when_shards_are_behind_head(cluster: Any, tmp_path: Path) -> None:
    with scratch_topology(cluster.topology) as empty:  # same servers, databases with no schema
        path = tmp_path / "topology.toml"
        dump_topology(empty, path)
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[3] / "src"), MESSENGER_OPEN_USERS="1")
        result = subprocess.run(
            [sys.executable, "-m", "messenger", "serve", "--port", str(free_port()),
             "--topology", str(path)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )
    assert result.returncode == 1
    assert "refusing to serve" in result.stderr and "messenger migrate up" in result.stderr


def test_serve_refuses_to_start_without_signing_keys_naming_the_variables(cluster: Any, tmp_path: Path) -> None:
    # The cluster's topology (schema at head) copied where no secrets file sits beside it.
    path = tmp_path / "topology.toml"
    dump_topology(cluster.topology, path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")}
    env.update(PYTHONPATH=str(Path(__file__).parents[3] / "src"))
    result = subprocess.run(
        [sys.executable, "-m", "messenger", "serve", "--port", str(free_port()), "--topology", str(path)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert "MESSENGER_TOKEN_SECRETS" in result.stderr and "MESSENGER_CURSOR_SECRETS" in result.stderr
