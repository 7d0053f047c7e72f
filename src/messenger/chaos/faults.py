"""The faults: what each one does to the cluster, how it is undone, and who may see errors.

Every fault is a pair of blocking steps, `inject` and `recover`, with the time it is held in
between; the runner calls them in a thread while the load goes on. Servers are restarted
through the cluster's own code (`LocalCluster.start_server`, `RedisServer.start`), as
`messenger cluster up` would.

The network partition is SIGSTOP of every process of the shard's PgBouncer, primary and
replica, not firewall rules: the machine has no iptables/nft, and pausing the processes gives
what a partition that drops packets gives (connections hang, nothing is refused, no RST),
without installing anything or needing CAP_NET_ADMIN.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from messenger.chaos.processes import (
    ProcessError,
    children,
    kill_tree,
    process_tree,
    read_pid,
    send,
)
from messenger.cluster.local import LocalCluster
from messenger.storage.relay.runner import BACKLOG

FAULTS: dict[str, str] = {
    "primary-kill": "kill -9 of one shard's primary, restarted after the hold",
    "replica-kill": "kill -9 of one shard's replica, restarted after the hold",
    "pgbouncer-kill": "kill -9 of one shard's PgBouncer, restarted after the hold",
    "redis-kill": "kill -9 of Redis, restarted after the hold",
    "worker-kill": "kill -9 of one API worker process (granian respawns it)",
    "partition": "one shard cut off (SIGSTOP of its PgBouncer, primary, replica), resumed after the hold",
    "primary-outage": "one shard's primary down for the long outage (--outage-seconds)",
    "replica-lag": "one shard's replica applying WAL 10 s late (recovery_min_apply_delay)",
}
"""Name -> what it does, in the order a full run goes through them."""

REPLICA_DELAY = "10s"
RESTART_TIMEOUT_S = 90.0


class FaultError(Exception):
    """A fault could not be injected or undone; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    description: str
    target: str
    """What is hit, e.g. `shard_1 primary`, `redis`, `API worker 4242`."""
    confined_to: tuple[str, ...] | None
    """The shards allowed to see errors; None when any may (Redis, an API worker)."""
    hold_s: float
    inject: Callable[[], None]
    recover: Callable[[], None]
    evidence: Callable[[], str] | None = None
    """Read at the end of the hold, before recovery: shows the fault did what it says (the
    replica's replay lag, the events the relay is holding for the shard that is down)."""


def parse_faults(text: str | None) -> list[str]:
    """`a,b,c` -> the names, checked; None or empty -> every fault."""
    if not text:
        return list(FAULTS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise FaultError(f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(FAULTS)}")
    if len(set(names)) != len(names):
        raise FaultError(f"a fault is named twice in {text!r}")
    return names


def build_fault(
    name: str, cluster: LocalCluster, *, shard: int, hold_s: float, outage_s: float,
    api_pid: int,
) -> Fault:
    shard_name = f"shard_{shard}"
    confined = (shard_name,)
    if name == "primary-kill":
        return Fault(name, FAULTS[name], f"{shard_name} primary", confined, hold_s,
                     lambda: _kill_postgres(cluster, shard, "primary"),
                     lambda: _restart(cluster, shard, "primary"),
                     lambda: _backlog_elsewhere(cluster, shard))
    if name == "replica-kill":
        return Fault(name, FAULTS[name], f"{shard_name} replica", confined, hold_s,
                     lambda: _kill_postgres(cluster, shard, "replica"),
                     lambda: _restart(cluster, shard, "replica"))
    if name == "pgbouncer-kill":
        return Fault(name, FAULTS[name], f"{shard_name} PgBouncer", confined, hold_s,
                     lambda: _kill_pidfile(cluster.pgbouncer(shard).pidfile),
                     lambda: _restart(cluster, shard, "pgbouncer"),
                     lambda: _backlog_elsewhere(cluster, shard))
    if name == "redis-kill":
        redis = cluster.redis()
        return Fault(name, FAULTS[name], "redis", None, hold_s,
                     lambda: _kill_pidfile(redis.pidfile), redis.start)
    if name == "worker-kill":
        killed: list[tuple[int, int]] = []
        return Fault(name, FAULTS[name], "one API worker", None, 0.0,
                     lambda: killed.append(_kill_worker(api_pid)),
                     lambda: _wait_respawned(api_pid, killed))
    if name == "partition":
        paused: list[int] = []
        return Fault(name, FAULTS[name], f"{shard_name} (all servers)", confined, hold_s,
                     lambda: paused.extend(_pause_shard(cluster, shard)),
                     lambda: send(paused, signal.SIGCONT),
                     lambda: _backlog_elsewhere(cluster, shard))
    if name == "primary-outage":
        return Fault(name, FAULTS[name], f"{shard_name} primary", confined, outage_s,
                     lambda: _kill_postgres(cluster, shard, "primary"),
                     lambda: _restart(cluster, shard, "primary"),
                     lambda: _backlog_elsewhere(cluster, shard))
    if name == "replica-lag":
        replica = cluster.postgres(shard, "replica").dsn(cluster.state.password)
        return Fault(name, FAULTS[name], f"{shard_name} replica", confined, hold_s,
                     lambda: _set_apply_delay(replica, REPLICA_DELAY),
                     lambda: _set_apply_delay(replica, None),
                     lambda: _replay_lag(replica))
    raise FaultError(f"unknown fault {name!r}; choose from {', '.join(FAULTS)}")


def _backlog_elsewhere(cluster: LocalCluster, shard: int) -> str:
    """The relay's backlog on the shards still up, read from their primaries directly."""
    pending = dead = 0
    oldest = 0.0
    for other in range(cluster.state.shards):
        if other == shard:
            continue
        dsn = cluster.postgres(other, "primary").dsn(cluster.state.password)
        try:
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                row = conn.execute(BACKLOG).fetchone()
        except psycopg.Error as exc:
            return f"backlog of shard_{other} unreadable: {exc}"
        assert row is not None
        pending += int(row[0])
        oldest = max(oldest, float(row[1]))
        dead += int(row[2])
    return (f"outbox of the other shards at the end of the hold: {pending} pending "
            f"(oldest {oldest:.0f} s), {dead} dead")


def _replay_lag(replica_dsn: str) -> str:
    with psycopg.connect(replica_dsn, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8"
        ).fetchone()
    lag = None if row is None or row[0] is None else float(row[0])
    return "replica replay lag at the end of the hold: " + ("unknown" if lag is None else f"{lag:.1f} s")


def _kill_postgres(cluster: LocalCluster, shard: int, role: str) -> None:
    server = cluster.postgres(shard, role)
    try:
        kill_tree(read_pid(server.pgdata / "postmaster.pid"))
    except ProcessError as exc:
        raise FaultError(f"cannot kill {server.name}: {exc}") from None


def _kill_pidfile(pidfile: Path) -> None:
    try:
        kill_tree(read_pid(pidfile))
    except ProcessError as exc:
        raise FaultError(f"cannot kill the server of {pidfile}: {exc}") from None


def _restart(cluster: LocalCluster, shard: int, role: str) -> None:
    """Start the server again; PostgreSQL may refuse for a moment while its killed backends'
    shared memory is released, so retry until RESTART_TIMEOUT_S."""
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while True:
        try:
            cluster.start_server(shard, role)
            return
        except (RuntimeError, psycopg.OperationalError) as exc:
            if time.monotonic() > deadline:
                raise FaultError(f"shard_{shard} {role} did not restart: {exc}") from None
            time.sleep(1.0)


def _workers(api_pid: int) -> list[int]:
    """The granian worker processes: the serve process's children that are Python workers."""
    workers = []
    for pid in children(api_pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            workers.append(pid)
    return workers


def _kill_worker(api_pid: int) -> tuple[int, int]:
    """Kill the first worker; returns (its pid, how many workers there were)."""
    workers = _workers(api_pid)
    if not workers:
        raise FaultError(f"the API (pid {api_pid}) has no worker process to kill")
    try:
        kill_tree(workers[0])
    except ProcessError as exc:
        raise FaultError(f"cannot kill API worker {workers[0]}: {exc}") from None
    return workers[0], len(workers)


def _wait_respawned(api_pid: int, killed: list[tuple[int, int]], timeout_s: float = 60.0) -> None:
    """Until granian has as many workers as before the kill, none of them the killed one."""
    victim, count = killed[-1]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers = _workers(api_pid)
        if len(workers) >= count and victim not in workers:
            return
        time.sleep(0.2)
    raise FaultError(f"the killed API worker was not replaced within {timeout_s:.0f} s")


def _pause_shard(cluster: LocalCluster, shard: int) -> list[int]:
    try:
        roots = [
            read_pid(cluster.pgbouncer(shard).pidfile),
            read_pid(cluster.postgres(shard, "primary").pgdata / "postmaster.pid"),
            read_pid(cluster.postgres(shard, "replica").pgdata / "postmaster.pid"),
        ]
    except ProcessError as exc:
        raise FaultError(f"cannot partition shard_{shard}: {exc}") from None
    pids = [pid for root in roots for pid in process_tree(root)]
    send(pids, signal.SIGSTOP)
    return pids


def _set_apply_delay(replica_dsn: str, delay: str | None) -> None:
    """ALTER SYSTEM on the replica itself (a standby accepts it) and reload its configuration."""
    with psycopg.connect(replica_dsn, autocommit=True, connect_timeout=5) as conn:
        if delay is None:
            conn.execute("ALTER SYSTEM RESET recovery_min_apply_delay")
        else:
            conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")
        conn.execute("SELECT pg_reload_conf()")
