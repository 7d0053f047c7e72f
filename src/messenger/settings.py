"""Runtime settings: one object, read from the environment and the topology file at start-up.

Nothing here connects to anything; `messenger.bootstrap` builds pools and clients from it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from messenger.topology import PGBOUNCER_POOL_SIZE, Topology, load_topology

ENV_PREFIX = "MESSENGER_"


def available_cpus() -> int:
    """CPUs this process may really use: affinity mask and cgroup v2/v1 CPU quota, like automaxprocs."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, int(quota + 0.5)))
    return max(1, count)


def _cgroup_cpu_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name, default)


@dataclass(frozen=True, slots=True)
class Settings:
    topology: Topology
    workers: int = 1
    """Worker processes sharing the PgBouncers; pools are sized so that all of them fit."""

    # Database calls. A whole call (pool acquire + statement) is bounded by the client-side
    # timeout; the server-side statement_timeout is a little shorter so the server stops first.
    primary_timeout: float = 1.5
    replica_timeout: float = 0.75
    """Shorter than the primary's: a replica that does not answer has the primary to fall back on."""
    statement_timeout_ms: int = 1200
    capacity_timeout_s: float = 10.0
    """How long a call may queue for one of this worker's pooled connections to a shard. That
    wait is overload, not an outage: it is not part of the deadlines above and never trips a
    breaker; past it the client gets 503 shard_busy."""
    pool_max_size: int = 10
    pool_min_size: int | None = None
    """None: keep every pool full (min = max). Connections are opened once at start-up and
    reused, instead of being opened under load, when opening one (SCRAM through PgBouncer)
    costs more than the queries it would serve."""

    # Circuit breakers: after this many consecutive failures a (shard, role) fails fast for
    # `breaker_reset_after` seconds, then lets one probe through.
    breaker_failures: int = 2
    breaker_reset_after: float = 1.0

    # Read-your-writes and replica routing.
    read_your_writes: bool = True
    """Check per-key freshness markers on reads (off only to measure what they cost)."""
    freshness_ttl_ms: int = 5000
    """How long a per-key freshness marker lives; longer than the replica lag bound."""
    max_replica_lag_s: float = 3.0
    """A replica further behind than this serves no reads; its shard reads from the primary."""
    monitor_interval_s: float = 0.25
    redis_timeout_s: float = 0.25

    # HTTP.
    max_body_bytes: int = 64 * 1024
    cursor_secret: bytes = field(default=b"", repr=False)

    # Accounts and access.
    token_secret: bytes = field(default=b"", repr=False)
    access_ttl_s: int = 900
    refresh_ttl_s: int = 30 * 24 * 3600
    open_users: bool = False
    """Anyone may create profile-only users (POST /api/v1/users) and change or delete those
    that have no account, without a token: the seed's load scenarios need it. On in the dev
    profile (`make run`) and the benchmark cluster, off by default."""
    login_failures_per_account: int = 10
    login_attempts_per_client: int = 60
    login_window_s: int = 300
    run_background: bool = True
    """Run the outbox relay and the claims sweeper inside this process."""

    # Messaging and live delivery.
    send_rate_per_s: float = 5.0
    """Messages a user may send per second on average (token bucket in Redis)..."""
    send_burst: int = 30
    """...and in a burst."""
    member_limit: int = 1000
    ws_heartbeat_s: float = 25.0
    """The server pings every this often and closes a socket it has not heard from in two."""
    ws_queue_limit: int = 256
    """Frames waiting for a socket's writer; a client that lets more pile up is disconnected."""
    ws_max_frame_bytes: int = 16 * 1024
    ws_resume_wait_s: float = 10.0
    """How long events wait for the resume a client announced (`?resume=1`) before flowing anyway."""

    # Operators.
    ops_token: str = field(default="", repr=False)
    """The bearer token of the operator's endpoints (the /cluster page's data). Empty: those
    endpoints refuse every caller. `make run` generates one into var/cluster/ops-token."""

    @classmethod
    def from_env(cls, topology_path: str | Path | None = None, *, workers: int | None = None) -> Settings:
        topology = load_topology(topology_path)
        n_workers = workers or int(_env("WORKERS", "0")) or available_cpus()
        # Every worker has its own pool per shard and role; together they should not queue
        # beyond PgBouncer's server pool (default_pool_size per database, see
        # cluster/pgbouncer.py), so each gets an equal slice of it, at least 2.
        bouncer_pool = int(_env("PGBOUNCER_POOL_SIZE", str(PGBOUNCER_POOL_SIZE)))
        pool_max = int(_env("POOL_MAX_SIZE", "0")) or max(2, bouncer_pool // n_workers)
        secret = _env("CURSOR_SECRET", "")
        token_secret = _env("TOKEN_SECRET", "")
        dev = _env("PROFILE", "") == "dev"
        return cls(
            topology=topology,
            workers=n_workers,
            pool_max_size=pool_max,
            primary_timeout=float(_env("PRIMARY_TIMEOUT", "1.5")),
            replica_timeout=float(_env("REPLICA_TIMEOUT", "0.75")),
            statement_timeout_ms=int(_env("STATEMENT_TIMEOUT_MS", "1200")),
            capacity_timeout_s=float(_env("CAPACITY_TIMEOUT", "10")),
            read_your_writes=_env("READ_YOUR_WRITES", "1") not in ("0", "false", "no"),
            freshness_ttl_ms=int(_env("FRESHNESS_TTL_MS", "5000")),
            max_replica_lag_s=float(_env("MAX_REPLICA_LAG", "3.0")),
            max_body_bytes=int(_env("MAX_BODY_BYTES", str(64 * 1024))),
            cursor_secret=secret.encode() if secret else _derived_secret(topology),
            token_secret=token_secret.encode() if token_secret else _derived_secret(topology, "tokens"),
            access_ttl_s=int(_env("ACCESS_TTL", "900")),
            refresh_ttl_s=int(_env("REFRESH_TTL", str(30 * 24 * 3600))),
            open_users=_flag("OPEN_USERS", dev),
            login_failures_per_account=int(_env("LOGIN_FAILURES_PER_ACCOUNT", "10")),
            login_attempts_per_client=int(_env("LOGIN_ATTEMPTS_PER_CLIENT", "60")),
            login_window_s=int(_env("LOGIN_WINDOW", "300")),
            run_background=_flag("BACKGROUND", True),
            send_rate_per_s=float(_env("SEND_RATE", "5")),
            send_burst=int(_env("SEND_BURST", "30")),
            member_limit=int(_env("MEMBER_LIMIT", "1000")),
            ws_heartbeat_s=float(_env("WS_HEARTBEAT", "25")),
            ws_queue_limit=int(_env("WS_QUEUE_LIMIT", "256")),
            ops_token=_env("OPS_TOKEN", "").strip(),
        )


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(ENV_PREFIX + name)
    return default if raw is None else raw.strip().lower() not in ("0", "false", "no", "off", "")


def _derived_secret(topology: Topology, purpose: str = "cursors") -> bytes:
    """A key every worker derives alike when none is configured. The DSNs carry the cluster's
    generated password, so it is secret as long as the topology file is; in production set
    MESSENGER_CURSOR_SECRET and MESSENGER_TOKEN_SECRET instead."""
    material = f"{purpose}|" + "|".join(s.rw_dsn for s in topology.shards) + f"|{topology.epoch}"
    return hashlib.sha256(material.encode()).digest()
