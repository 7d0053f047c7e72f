"""Bulk-load generated users into every shard with COPY.

Generation (ids, names, routing) runs in the calling thread and is pipelined with loading:
each shard has one loader thread with its own connection to the shard's primary (direct, not
through PgBouncer: COPY is admin work, and a long COPY would pin a pooled server connection
anyway) fed through a small bounded queue, so the generator never runs far ahead of the
slowest shard and memory stays flat however many rows are asked for.

Rows are sent as COPY text: one formatted line per row, joined into one buffer per shard per
batch. That is several times cheaper in Python than `Copy.write_row`, and the only values are
UUIDs and names whose COPY escaping is done once, when the name pool is built.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import psycopg

from messenger.domain.ids import new_id
from messenger.storage.shards.ring import HashRing
from messenger.topology import ShardConfig, Topology

DEFAULT_BATCH_SIZE = 20_000
DEFAULT_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "pl_PL", "nl_NL")
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 120_000
QUEUE_DEPTH = 3
"""Batches buffered per shard: enough to keep every loader busy, small enough to bound memory."""

COPY_USERS = "COPY users (id, first_name, last_name) FROM STDIN"
ANY_USER = "SELECT EXISTS (SELECT 1 FROM users)"

ProgressCallback = Callable[[int], None]
"""Called from loader threads with the number of rows just committed on one shard."""


class SeedError(Exception):
    """A shard refused or lost the load; rows committed before the failure stay."""


@dataclass(frozen=True, slots=True)
class NamePool:
    """First and last names, already escaped for COPY text, combined at random per row."""

    first_names: tuple[str, ...]
    last_names: tuple[str, ...]

    @classmethod
    def build(
        cls,
        size: int = 1_500,
        locales: Sequence[str] = DEFAULT_LOCALES,
        seed: int | None = None,
    ) -> NamePool:
        """Draw up to `size` distinct first and last names from faker, once.

        Calling faker per row costs tens of microseconds; a pool of a few thousand names
        combined at random gives millions of plausible, varied full names for nothing.
        """
        from faker import Faker  # imported here: building the pool is the only use

        fake = Faker(list(locales))
        if seed is not None:
            fake.seed_instance(seed)
        firsts: set[str] = set()
        lasts: set[str] = set()
        for _ in range(size * 3):
            firsts.add(fake.first_name())
            lasts.add(fake.last_name())
            if len(firsts) >= size and len(lasts) >= size:
                break
        return cls(
            first_names=tuple(sorted(_copy_escape(n) for n in firsts)),
            last_names=tuple(sorted(_copy_escape(n) for n in lasts)),
        )


@dataclass(frozen=True, slots=True)
class SeedResult:
    rows_per_shard: dict[int, int]
    elapsed_s: float

    @property
    def total(self) -> int:
        return sum(self.rows_per_shard.values())

    @property
    def rows_per_second(self) -> float:
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(slots=True)
class ShardBatch:
    """One batch's rows for one shard, as a ready COPY text buffer."""

    rows: int
    data: bytes


def _copy_escape(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def generate_batches(
    n: int,
    ring: HashRing,
    names: NamePool,
    batch_size: int = DEFAULT_BATCH_SIZE,
    rng: random.Random | None = None,
) -> Iterator[dict[int, ShardBatch]]:
    """Yield N generated users in batches, each already split by the shard the ring picks."""
    rng = rng or random.Random()
    firsts, lasts = names.first_names, names.last_names
    shard_for = ring.shard_for
    choice = rng.choice
    remaining = n
    while remaining > 0:
        size = min(batch_size, remaining)
        remaining -= size
        lines: dict[int, list[str]] = {}
        for _ in range(size):
            key = str(new_id())
            shard = shard_for(key)
            line = f"{key}\t{choice(firsts)}\t{choice(lasts)}\n"
            bucket = lines.get(shard)
            if bucket is None:
                lines[shard] = [line]
            else:
                bucket.append(line)
        yield {
            shard: ShardBatch(rows=len(rows), data="".join(rows).encode())
            for shard, rows in lines.items()
        }


def _connect(shard: ShardConfig) -> psycopg.Connection[tuple[object, ...]]:
    conn = psycopg.connect(
        shard.primary_dsn,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name="messenger-seed",
        prepare_threshold=None,
    )
    with conn.cursor() as cur:
        cur.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        # A lost tail of a seed after a crash is harmless; waiting for every flush is not.
        cur.execute("SET synchronous_commit = off")
    conn.commit()
    return conn


class _ShardLoader(threading.Thread):
    """Feeds one shard: each batch is one COPY in its own transaction."""

    def __init__(self, shard: ShardConfig, on_progress: ProgressCallback | None) -> None:
        super().__init__(name=f"seed-{shard.name}", daemon=True)
        self.shard = shard
        self.inbox: queue.Queue[ShardBatch | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self.loaded = 0
        self.error: BaseException | None = None
        self._on_progress = on_progress

    def run(self) -> None:
        try:
            with _connect(self.shard) as conn:
                while (batch := self.inbox.get()) is not None:
                    with conn.cursor() as cur, cur.copy(COPY_USERS) as copy:
                        copy.write(batch.data)
                    conn.commit()
                    self.loaded += batch.rows
                    if self._on_progress is not None:
                        self._on_progress(batch.rows)
        except (psycopg.Error, OSError) as exc:  # handed to the caller's thread, which raises
            self.error = exc
            # Keep draining so the generator never blocks on a dead shard's full queue.
            while self.inbox.get() is not None:
                pass

    def put(self, batch: ShardBatch | None) -> None:
        self.inbox.put(batch)


def seed_users(
    topology: Topology,
    n: int,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    names: NamePool | None = None,
    rng: random.Random | None = None,
    on_progress: ProgressCallback | None = None,
) -> SeedResult:
    """Generate `n` users and COPY each into its ring shard's primary, all shards in parallel."""
    if n < 0:
        raise ValueError("the number of users cannot be negative")
    if batch_size < 1:
        raise ValueError("the batch size must be at least 1")
    ring = HashRing.for_topology(topology)
    names = names or NamePool.build()
    started = time.perf_counter()
    loaders = {s.index: _ShardLoader(s, on_progress) for s in topology.shards}
    for loader in loaders.values():
        loader.start()
    try:
        for batch in generate_batches(n, ring, names, batch_size, rng):
            if any(loader.error is not None for loader in loaders.values()):
                break
            for shard, shard_batch in batch.items():
                loaders[shard].put(shard_batch)
    finally:
        for loader in loaders.values():
            loader.put(None)
        for loader in loaders.values():
            loader.join()
    elapsed = time.perf_counter() - started
    failed = {i: loader.error for i, loader in loaders.items() if loader.error is not None}
    if failed:
        detail = "; ".join(f"{loaders[i].shard.name}: {err}" for i, err in failed.items())
        raise SeedError(f"seeding failed on {len(failed)} shard(s): {detail}")
    return SeedResult({i: loader.loaded for i, loader in loaders.items()}, elapsed)


def users_tables_empty(topology: Topology) -> bool:
    """True when no shard holds a single user (asked of each primary directly)."""
    for shard in topology.shards:
        with _connect(shard) as conn:
            row = conn.execute(ANY_USER).fetchone()
            if row is not None and row[0]:
                return False
    return True


def seed_demo_if_empty(topology: Topology, n: int = 1_000) -> int:
    """Seed `n` demo users when every shard's users table is empty; return how many were added.

    Meant for `make run`: a fresh cluster gets something to look at, and a cluster that already
    holds data (demo or real) is never touched.
    """
    if not users_tables_empty(topology):
        return 0
    return seed_users(topology, n, rng=random.Random(0)).total
