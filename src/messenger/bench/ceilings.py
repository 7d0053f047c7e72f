"""The database's own ceiling, measured with pgbench on the same shards in the same run.

Two workloads, each run on every shard at once (our API spreads load over all of them, so the
ceiling it is compared with is the sum over shards):

- select-only by primary key: pgbench's classic `-S` transaction on a 100k-row table shaped like
  `pgbench_accounts`. It is the number the project's reference figures use, and an int key keeps
  pgbench free of any lookup of its own; our GET by uuid primary key does the same index probe.
- single-row insert into a copy of the `users` table (`LIKE users INCLUDING ALL`: same columns,
  defaults, generated `ring_pos` and primary key), so the insert costs what ours costs.

Both live in a scratch schema, `bench_ceiling`, created on each primary before and dropped after,
so the users tables and their distribution are never touched. Selects run on the path our reads
take (replica: direct and through PgBouncer's ro entry), inserts on the path our writes take
(primary: direct and through the rw entry). pgbench runs with `-M simple`: PgBouncer 1.18 in
transaction mode has no prepared statements, and our API uses none either.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from messenger.topology import ShardConfig, Topology

PGBENCH_CANDIDATES = ("pgbench", "/usr/lib/postgresql/15/bin/pgbench")
SCHEMA = "bench_ceiling"
ACCOUNTS = 100_000
REPLICA_WAIT_S = 60.0

SETUP = [
    f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE",
    f"CREATE SCHEMA {SCHEMA}",
    f"CREATE TABLE {SCHEMA}.accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84))",
    f"INSERT INTO {SCHEMA}.accounts SELECT g, 1, 0, '' FROM generate_series(1, {ACCOUNTS}) g",
    f"CREATE TABLE {SCHEMA}.users (LIKE public.users INCLUDING ALL)",
    f"ANALYZE {SCHEMA}.accounts",
]
TEARDOWN = f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"
REPLICA_READY = f"SELECT count(*) FROM {SCHEMA}.accounts"

SELECT_SCRIPT = f"""\\set aid random(1, {ACCOUNTS})
SELECT abalance FROM {SCHEMA}.accounts WHERE aid = :aid;
"""
INSERT_SCRIPT = f"""INSERT INTO {SCHEMA}.users (id, first_name, last_name, ring_pos)
SELECT u, 'Ada', 'Lovelace', (('x' || substr(md5(u::text), 1, 8))::bit(32))::bigint
FROM gen_random_uuid() AS u;
"""
"""`ring_pos` is computed inline: LIKE copies no trigger (ours is a BEFORE trigger, 0008)."""

TPS_LINE = re.compile(r"tps = ([0-9.]+) \((?:without initial connection time|excluding)")


@dataclass(frozen=True, slots=True)
class PgbenchResult:
    workload: str
    """select or insert"""
    path: str
    """direct or pgbouncer"""
    tps: float
    """Sum over shards."""
    per_shard_tps: dict[str, float]
    clients_per_shard: int
    duration_s: float
    errors: list[str]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def find_pgbench() -> str | None:
    for candidate in PGBENCH_CANDIDATES:
        if found := shutil.which(candidate):
            return found
    return None


def _execute(dsn: str, statements: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5, prepare_threshold=None) as conn:
        for sql in statements:
            conn.execute(sql)


def _wait_for_replica(shard: ShardConfig) -> None:
    if shard.replica_dsn == shard.primary_dsn:
        return
    deadline = time.monotonic() + REPLICA_WAIT_S
    while True:
        try:
            with psycopg.connect(shard.replica_dsn, connect_timeout=5) as conn:
                row = conn.execute(REPLICA_READY).fetchone()
                if row and row[0] == ACCOUNTS:
                    return
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"{shard.name} replica did not catch up with the scratch schema")
        time.sleep(0.2)


def prepare(topology: Topology) -> None:
    """Create the scratch schema on every primary and wait until the replicas have it."""
    with ThreadPoolExecutor(len(topology.shards)) as pool:
        list(pool.map(lambda s: _execute(s.primary_dsn, SETUP), topology.shards))
        list(pool.map(_wait_for_replica, topology.shards))


def cleanup(topology: Topology) -> None:
    for shard in topology.shards:
        _execute(shard.primary_dsn, [TEARDOWN])


def _pgbench(
    pgbench: str, dsn: str, script: Path, clients: int, duration: float
) -> tuple[float, str]:
    cmd = [pgbench, "-n", "-M", "simple", "-f", str(script), "-c", str(clients), "-j", "1"]
    cmd += ["-T", str(max(1, round(duration))), dsn]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=duration + 60)
    match = TPS_LINE.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        return 0.0, (proc.stderr or proc.stdout).strip()[-300:]
    return float(match.group(1)), ""


def run_workload(
    topology: Topology,
    workload: str,
    path: str,
    *,
    clients_per_shard: int,
    duration: float,
    pgbench: str,
) -> PgbenchResult:
    """One pgbench per shard, all at once; the ceiling is the sum of their TPS."""
    script_text = SELECT_SCRIPT if workload == "select" else INSERT_SCRIPT

    def dsn_for(shard: ShardConfig) -> str:
        if workload == "select":
            return shard.replica_dsn if path == "direct" else shard.ro_dsn
        return shard.primary_dsn if path == "direct" else shard.rw_dsn

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / f"{workload}.sql"
        script.write_text(script_text)
        with ThreadPoolExecutor(len(topology.shards)) as pool:
            results = list(
                pool.map(
                    lambda s: _pgbench(pgbench, dsn_for(s), script, clients_per_shard, duration),
                    topology.shards,
                )
            )
    per_shard = {s.name: tps for s, (tps, _) in zip(topology.shards, results, strict=True)}
    errors = [f"{s.name}: {e}" for s, (_, e) in zip(topology.shards, results, strict=True) if e]
    return PgbenchResult(
        workload=workload,
        path=path,
        tps=sum(per_shard.values()),
        per_shard_tps=per_shard,
        clients_per_shard=clients_per_shard,
        duration_s=duration,
        errors=errors,
    )


def measure_database_ceilings(
    topology: Topology, *, duration: float = 10.0, clients_per_shard: int = 16
) -> list[PgbenchResult]:
    """pgbench select-only and single-row insert, direct and through PgBouncer, all shards."""
    pgbench = find_pgbench()
    if pgbench is None:
        raise RuntimeError("pgbench not found (install postgresql-client)")
    prepare(topology)
    try:
        return [
            run_workload(
                topology,
                workload,
                path,
                clients_per_shard=clients_per_shard,
                duration=duration,
                pgbench=pgbench,
            )
            for workload in ("select", "insert")
            for path in ("direct", "pgbouncer")
        ]
    finally:
        cleanup(topology)
