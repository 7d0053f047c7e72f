"""Finding the server programs the local cluster runs, with a clear message when one is missing."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path


class MissingBinary(Exception):
    """A server program is not installed."""


@dataclass(frozen=True, slots=True)
class Binaries:
    pg_bin: Path
    pgbouncer: Path
    redis_server: Path

    def pg(self, name: str) -> str:
        return str(self.pg_bin / name)


def _postgres_bindir() -> Path:
    # Debian keeps the server programs out of PATH, one directory per major version.
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    on_path = shutil.which("postgres") or shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise MissingBinary(
        "PostgreSQL server programs not found: install them with "
        "`apt-get install postgresql postgresql-client` (or run `make setup`)"
    )


def _which(program: str, package: str) -> Path:
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin")
    if not found:
        raise MissingBinary(
            f"{program} not found: install it with `apt-get install {package}` (or run `make setup`)"
        )
    return Path(found)


def find_binaries() -> Binaries:
    return Binaries(
        pg_bin=_postgres_bindir(),
        pgbouncer=_which("pgbouncer", "pgbouncer"),
        redis_server=_which("redis-server", "redis-server"),
    )
