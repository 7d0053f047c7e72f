"""Per-shard schema migrations: one Alembic history applied to every shard primary.

Shards migrate concurrently, each in its own process (Alembic's `context` and `op` are
process-global) and its own transaction, under an advisory lock (see migrations/env.py).
A shard that fails leaves the others where they got to; re-running finishes the job.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from messenger.topology import ShardConfig, Topology

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
CONNECT_TIMEOUT_S = 3


@dataclass(frozen=True, slots=True)
class ShardOutcome:
    shard: str
    before: str | None
    after: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class DriftReport:
    head: str
    revisions: dict[str, str | None]
    unreachable: dict[str, str] = field(default_factory=dict)

    @property
    def behind(self) -> dict[str, str | None]:
        return {s: r for s, r in self.revisions.items() if r != self.head}

    @property
    def ok(self) -> bool:
        """Every reachable shard is at head (an unreachable one fails only its own requests)."""
        return not self.behind

    @property
    def message(self) -> str:
        if self.ok:
            return f"every reachable shard is at head {self.head}"
        where = ", ".join(f"{s} at {r or 'no schema'}" for s, r in sorted(self.behind.items()))
        return (
            f"schema drift: {where}; head is {self.head}. "
            "Run `messenger migrate up` to bring every shard to head."
        )


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    if url is not None:
        config.attributes["url"] = url
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migration history is empty"
    return head


def sqlalchemy_url(dsn: str) -> str:
    scheme, rest = dsn.split("://", 1)
    assert scheme in ("postgresql", "postgres"), f"not a PostgreSQL DSN: {scheme}://"
    return f"postgresql+psycopg://{rest}"


def shard_revision(shard: ShardConfig) -> str | None:
    """The shard's current revision (None when it has no schema yet)."""
    with psycopg.connect(shard.primary_dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version LIMIT 1").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return row[0] if row else None


def _migrate_shard(shard: ShardConfig, direction: str, revision: str) -> ShardOutcome:
    """Runs in a worker process: migrate one shard and report where it went."""
    before: str | None = None
    try:
        before = shard_revision(shard)
        config = alembic_config(sqlalchemy_url(shard.primary_dsn))
        if direction == "up":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)
        return ShardOutcome(shard.name, before, shard_revision(shard))
    except Exception as exc:  # reported per shard; the other shards carry on
        try:
            after = shard_revision(shard)
        except psycopg.Error:
            after = before
        return ShardOutcome(shard.name, before, after, error=_first_line(exc))


def migrate(
    topology: Topology,
    direction: str = "up",
    revision: str = "head",
    on_shard_done: Callable[[ShardOutcome], None] | None = None,
) -> list[ShardOutcome]:
    """Move every shard to `revision`, concurrently; one outcome per shard, in shard order."""
    if direction not in ("up", "down"):
        raise ValueError(f"direction is 'up' or 'down', not {direction!r}")
    context = multiprocessing.get_context("spawn")
    outcomes: dict[str, ShardOutcome] = {}
    with ProcessPoolExecutor(max_workers=min(len(topology.shards), 8), mp_context=context) as pool:
        futures = [pool.submit(_migrate_shard, s, direction, revision) for s in topology.shards]
        for future in as_completed(futures):
            outcome = future.result()
            outcomes[outcome.shard] = outcome
            if on_shard_done is not None:
                on_shard_done(outcome)
    return [outcomes[s.name] for s in topology.shards]


def check_drift(topology: Topology) -> DriftReport:
    revisions: dict[str, str | None] = {}
    unreachable: dict[str, str] = {}
    for shard in topology.shards:
        try:
            revisions[shard.name] = shard_revision(shard)
        except psycopg.Error as exc:
            unreachable[shard.name] = _first_line(exc)
    return DriftReport(head=head_revision(), revisions=revisions, unreachable=unreachable)


def new_revision(message: str) -> Path:
    """Create the next numbered revision file from the template; returns its path."""
    script = ScriptDirectory.from_config(alembic_config())
    numbers = [int(r.revision) for r in script.walk_revisions() if r.revision.isdigit()]
    rev_id = f"{max(numbers, default=0) + 1:04d}"
    slug = "_".join(message.lower().split())[:40]
    created = command.revision(alembic_config(), message=message, rev_id=rev_id)
    assert created is not None and not isinstance(created, list)
    path = Path(created.path)
    wanted = path.with_name(f"{rev_id}_{slug}.py")
    path.rename(wanted)
    return wanted


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
