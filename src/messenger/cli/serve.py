"""`messenger serve`: the API on granian, one worker process per available core (prefork)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from messenger.cli.console import console, fail
from messenger.settings import ENV_PREFIX, SettingsError, available_cpus, load_keys
from messenger.topology import TOPOLOGY_ENV, TopologyError, load_topology

APP_FACTORY = "messenger.bootstrap:create_app_from_env"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Must be set before prometheus_client is first imported (it picks its value store then), so
this module does not import messenger.metrics, and the workers import it after the fork."""
BACKLOG = 4096
"""Connections the kernel holds before granian accepts them (capped by net.core.somaxconn):
a burst of thousands of clients connecting at once must not see refused connections."""
BACKPRESSURE = 8192
"""Requests each worker takes in at once. Deliberately far above what the database can serve:
requests beyond granian's bound wait unread in its Rust side in no particular order, so some
connections starve past the client's timeout, while requests taken in queue first-come,
first-served for the pool's connections (storage/shards/capacity.py). Same cluster, 2 workers, our
generator, 15-20 s: at 1,000 connections 128 gave 97.5 % ok and p99 5.1 s against 100 % and
0.85 s with 1,024 (granian's default, backlog/workers); at 10,000 connections 1,024 gave 79 %
ok against 97.4 % with 8,192 (the rest: 10 s client timeouts, at ~1.2k req/s a closed loop of
10,000 users waits 8 s on average)."""


def resolve_workers(workers: str) -> int:
    """'auto' → the CPUs this process may use (affinity and cgroup quota aware), else a number."""
    if workers == "auto":
        return available_cpus()
    try:
        count = int(workers)
    except ValueError:
        raise typer.BadParameter("--workers must be 'auto' or a positive integer") from None
    if count < 1:
        raise typer.BadParameter("--workers must be 'auto' or a positive integer")
    return count


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[
        str, typer.Option(help="Worker processes: 'auto' (one per available core) or a number.")
    ] = "auto",
    backpressure: Annotated[
        int, typer.Option(help="Requests each worker processes at once; granian queues the rest.")
    ] = BACKPRESSURE,
    topology: Annotated[
        str | None,
        typer.Option("--topology", envvar=TOPOLOGY_ENV, help="Topology file (default var/cluster/topology.toml)."),
    ] = None,
) -> None:
    """Serve the HTTP API over the shards of the topology file."""
    from granian import Granian
    from granian.constants import Interfaces, Loops

    from messenger.storage.migrator import check_drift

    try:
        topo = load_topology(topology)
    except TopologyError as exc:
        fail(str(exc))
    report = check_drift(topo)
    if not report.ok:
        fail(f"refusing to serve: {report.message}")
    try:  # the workers would each fail (and be respawned) on the same missing key
        load_keys(topo, dev=os.environ.get(ENV_PREFIX + "PROFILE") == "dev")
    except SettingsError as exc:
        fail(f"refusing to serve: {exc}")
    count = resolve_workers(workers)
    assert topo.path is not None
    # Workers are separate processes that build their own settings: hand them what we resolved.
    os.environ[TOPOLOGY_ENV] = str(topo.path.resolve())
    os.environ[ENV_PREFIX + "WORKERS"] = str(count)
    metrics_dir = tempfile.mkdtemp(prefix="messenger-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    # The `messenger` entry point imports every command, and some import prometheus_client,
    # which chose its single-process value store then: choose again now that the directory
    # is set, before any worker (forked from this process) creates a metric.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    console.print(
        f"serving on http://{host}:{port} with {count} worker(s) over {len(topo.shards)} shards "
        f"(schema {report.head})"
    )
    try:
        Granian(
            APP_FACTORY,
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            workers=count,
            loop=Loops.uvloop,
            factory=True,
            backlog=BACKLOG,
            backpressure=backpressure,
            log_access=False,
            respawn_failed_workers=True,
        ).serve()
    finally:
        shutil.rmtree(Path(metrics_dir), ignore_errors=True)
