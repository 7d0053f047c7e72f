"""Runtime settings: one object, read from the environment and the topology file at start-up.

Nothing here connects to anything; `messenger.bootstrap` builds pools and clients from it.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from messenger.domain.keys import InvalidKeys, KeySet, generate_key
from messenger.topology import PGBOUNCER_POOL_SIZE, Topology, load_topology

ENV_PREFIX = "MESSENGER_"
SECRETS_FILE_NAME = "secrets.toml"
"""Beside the topology file unless MESSENGER_SECRETS_FILE names another: `messenger cluster up`
writes one (mode 600) into the cluster's data directory."""
_DEV_KEYS = KeySet.single(b"-" * 32, "unset")  # only a placeholder for Settings() in code; never served


class SettingsError(Exception):
    """The configuration cannot be served: a missing or malformed secret, a bad file mode."""


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
    freshness_feed: bool = True
    """Keep a copy of the markers in every worker, fed by Redis pub/sub, so reads need not ask
    Redis (storage/shards/freshness_feed.py); MESSENGER_FRESHNESS_FEED=off to compare."""
    max_replica_lag_s: float = 3.0
    """A replica further behind than this serves no reads; its shard reads from the primary."""
    monitor_interval_s: float = 0.25
    redis_timeout_s: float = 0.25

    # HTTP.
    max_body_bytes: int = 64 * 1024
    cursor_keys: KeySet = field(default=_DEV_KEYS, repr=False)
    """Signs listing cursors (first key) and verifies them (every key): see load_keys."""

    # Accounts and access.
    token_keys: KeySet = field(default=_DEV_KEYS, repr=False)
    """Signs access tokens (first key, its id in the JWT header) and verifies them (every key)."""
    access_ttl_s: int = 900
    refresh_ttl_s: int = 30 * 24 * 3600
    open_users: bool = False
    """Anyone may create profile-only users (POST /api/v1/users) and change or delete those
    that have no account, without a token: the seed's load scenarios need it. On in the dev
    profile (`make run`) and the benchmark cluster, off by default."""
    login_failures_per_account: int = 5
    """Wrong passwords for one login before each further attempt waits (never a lock-out)..."""
    login_backoff_base_s: float = 1.0
    login_backoff_max_s: float = 60.0
    """...first `base`, doubling up to `max`; forgotten after `login_window_s` without attempts."""
    login_attempts_per_client: int = 60
    login_window_s: int = 300
    trusted_proxies: tuple[str, ...] = ()
    """Networks whose X-Forwarded-For names the client (api/clients.py); none by default."""

    # Abuse limits on what fans out (README, "Security settings for production").
    registrations_per_client: int = 20
    registration_window_s: int = 3600
    account_change_rate_per_s: float = 0.2
    account_change_burst: int = 10
    group_rate_per_s: float = 0.1
    group_burst: int = 10
    members_per_request: int = 100
    members_added_per_window: int = 500
    members_window_s: int = 3600
    edit_rate_per_s: float = 2.0
    edit_burst: int = 20
    typing_per_socket_per_s: float = 5.0
    resume_rate_per_s: float = 0.5
    resume_burst: int = 10
    sockets_per_user: int = 10
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

    # Retention of rows kept only for a while (the background pruner).
    delivered_outbox_retention_s: float = 86400.0
    applied_events_retention_s: float = 7 * 86400.0
    """Must outlive any redelivery window (an event is redelivered only while undelivered)."""
    refresh_token_retention_s: float = 86400.0
    event_log_retention_s: float = 30 * 86400.0
    """Conversation events older than this become one `log.trimmed` frame (MESSENGER_EVENT_LOG_RETENTION)."""
    """After a token's expiry or use."""

    # The per-worker read caches: users by id, conversation memberships (storage/cache/).
    cache: bool = True
    """MESSENGER_CACHE=off: no cache at all (every read goes to the database)."""
    cache_size: int = 100_000
    """Entries per worker and cache (least recently used are evicted beyond it)."""
    cache_ttl_s: float = 30.0
    """Backstop: an entry is read again after this long even if no invalidation came."""

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
        dev = _env("PROFILE", "") == "dev"
        token_keys, cursor_keys = load_keys(topology, dev=dev)
        kept = retention_from_env()
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
            freshness_feed=_flag("FRESHNESS_FEED", True),
            max_replica_lag_s=float(_env("MAX_REPLICA_LAG", "3.0")),
            max_body_bytes=int(_env("MAX_BODY_BYTES", str(64 * 1024))),
            cursor_keys=cursor_keys,
            token_keys=token_keys,
            access_ttl_s=int(_env("ACCESS_TTL", "900")),
            refresh_ttl_s=int(_env("REFRESH_TTL", str(30 * 24 * 3600))),
            open_users=_flag("OPEN_USERS", dev),
            login_failures_per_account=int(_env("LOGIN_FAILURES_PER_ACCOUNT", "5")),
            login_backoff_base_s=float(_env("LOGIN_BACKOFF_BASE", "1")),
            login_backoff_max_s=float(_env("LOGIN_BACKOFF_MAX", "60")),
            login_attempts_per_client=int(_env("LOGIN_ATTEMPTS_PER_CLIENT", "60")),
            login_window_s=int(_env("LOGIN_WINDOW", "300")),
            trusted_proxies=_networks(_env("TRUSTED_PROXIES", "")),
            registrations_per_client=int(_env("REGISTRATIONS_PER_CLIENT", "20")),
            registration_window_s=int(_env("REGISTRATION_WINDOW", "3600")),
            account_change_rate_per_s=float(_env("ACCOUNT_CHANGE_RATE", "0.2")),
            account_change_burst=int(_env("ACCOUNT_CHANGE_BURST", "10")),
            group_rate_per_s=float(_env("GROUP_RATE", "0.1")),
            group_burst=int(_env("GROUP_BURST", "10")),
            members_per_request=int(_env("MEMBERS_PER_REQUEST", "100")),
            members_added_per_window=int(_env("MEMBERS_ADDED_PER_WINDOW", "500")),
            members_window_s=int(_env("MEMBERS_WINDOW", "3600")),
            edit_rate_per_s=float(_env("EDIT_RATE", "2")),
            edit_burst=int(_env("EDIT_BURST", "20")),
            typing_per_socket_per_s=float(_env("TYPING_PER_SOCKET", "5")),
            resume_rate_per_s=float(_env("RESUME_RATE", "0.5")),
            resume_burst=int(_env("RESUME_BURST", "10")),
            sockets_per_user=int(_env("SOCKETS_PER_USER", "10")),
            ws_max_frame_bytes=int(_env("WS_MAX_FRAME_BYTES", str(16 * 1024))),
            run_background=_flag("BACKGROUND", True),
            send_rate_per_s=float(_env("SEND_RATE", "5")),
            send_burst=int(_env("SEND_BURST", "30")),
            member_limit=int(_env("MEMBER_LIMIT", "1000")),
            ws_heartbeat_s=float(_env("WS_HEARTBEAT", "25")),
            ws_queue_limit=int(_env("WS_QUEUE_LIMIT", "256")),
            delivered_outbox_retention_s=kept["delivered_outbox_retention_s"],
            applied_events_retention_s=kept["applied_events_retention_s"],
            refresh_token_retention_s=kept["refresh_token_retention_s"],
            event_log_retention_s=kept["event_log_retention_s"],
            ops_token=_env("OPS_TOKEN", "").strip(),
            cache=_flag("CACHE", True),
            cache_size=int(_env("CACHE_SIZE", "100000")),
            cache_ttl_s=float(_env("CACHE_TTL", "30")),
        )


def retention_from_env() -> dict[str, float]:
    """The pruner's retention settings alone, for `messenger relay` (which needs no signing keys)."""
    return {
        "delivered_outbox_retention_s": float(_env("DELIVERED_OUTBOX_RETENTION", "86400")),
        "applied_events_retention_s": float(_env("APPLIED_EVENTS_RETENTION", str(7 * 86400))),
        "refresh_token_retention_s": float(_env("REFRESH_TOKEN_RETENTION", "86400")),
        "event_log_retention_s": float(_env("EVENT_LOG_RETENTION", str(30 * 86400))),
    }


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(ENV_PREFIX + name)
    return default if raw is None else raw.strip().lower() not in ("0", "false", "no", "off", "")


def _networks(text: str) -> tuple[str, ...]:
    networks = tuple(n.strip() for n in text.split(",") if n.strip())
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}TRUSTED_PROXIES: {network!r} is not an address or network") from None
    return networks


def secrets_path(topology: Topology) -> Path | None:
    """Where the secrets file is: MESSENGER_SECRETS_FILE, else beside the topology file."""
    configured = _env("SECRETS_FILE", "")
    if configured:
        return Path(configured)
    return None if topology.path is None else topology.path.parent / SECRETS_FILE_NAME


def load_keys(topology: Topology, *, dev: bool = False) -> tuple[KeySet, KeySet]:
    """The token and cursor key sets, from MESSENGER_TOKEN_SECRETS / MESSENGER_CURSOR_SECRETS
    (`kid:secret[,kid:secret…]`, newest first) or else the secrets file.

    Outside the dev profile a missing key is an error naming the variables: a key is never
    derived from the DSNs or the epoch. The dev profile (`make run`) creates the file beside
    the topology when it is missing (random keys, mode 600), as `messenger cluster up` does.
    """
    for legacy in ("TOKEN_SECRET", "CURSOR_SECRET"):
        if _env(legacy, ""):
            raise SettingsError(
                f"{ENV_PREFIX}{legacy} is replaced by {ENV_PREFIX}{legacy}S=kid:secret[,kid:secret…] "
                "(newest first; the key id lets keys rotate)"
            )
    path = secrets_path(topology)
    if dev and path is not None and not path.exists():
        write_secrets_file(path)
    stored = _read_secrets_file(path) if path is not None and path.exists() else {}
    found: list[KeySet] = []
    for name in ("TOKEN_SECRETS", "CURSOR_SECRETS"):
        text = _env(name, "") or stored.get(name.lower(), "")
        if not text:
            raise SettingsError(
                f"no signing keys: set {ENV_PREFIX}TOKEN_SECRETS and {ENV_PREFIX}CURSOR_SECRETS "
                f"(kid:secret[,kid:secret…], secrets of at least 32 random bytes) or write them to "
                f"{path or SECRETS_FILE_NAME} ({ENV_PREFIX}SECRETS_FILE); `messenger cluster up` "
                "generates one for a local cluster"
            )
        try:
            found.append(KeySet.parse(text).require_length(32, name.lower().removesuffix("_secrets")))
        except InvalidKeys as exc:
            raise SettingsError(f"{ENV_PREFIX}{name}: {exc}") from None
    return found[0], found[1]


def _read_secrets_file(path: Path) -> dict[str, str]:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(f"{path} is readable by others (mode {oct(mode & 0o777)}): chmod 600 it")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from None
    out = {}
    for name in ("token_secrets", "cursor_secrets"):
        value = data.get(name, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{path}: {name} must be a list of \"kid:secret\" strings, newest first")
        out[name] = ",".join(value)
    return out


def write_secrets_file(path: Path) -> bool:
    """Create `path` with fresh random keys (mode 600) unless it exists; True if created.

    Written to a private temporary file and linked into place, so processes racing to create it
    (the dev profile's workers) all end up reading the same keys.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# Signing keys (README, \"Security settings for production\"). Newest first: the first\n"
        "# key signs, every key verifies. Rotate by adding a key in front; drop the old one once\n"
        "# what it signed has expired (access tokens: MESSENGER_ACCESS_TTL, 15 minutes).\n"
        + tomli_w.dumps({
            "token_secrets": [KeySet((generate_key(),)).text()],
            "cursor_secrets": [KeySet((generate_key(),)).text()],
        })
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secrets-")
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp files are mode 600
            out.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)

