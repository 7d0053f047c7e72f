"""Session fixtures: one throwaway cluster (3 shards, replicas, PgBouncers, Redis) per test run.

The cluster lives in a fresh temporary directory on free ports, under a directory only its
owner may enter (as a checkout under /root would be), and is always torn down.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from messenger.cluster.local import LocalCluster
from messenger.storage.migrator import migrate
from tests.support.ports import free_base_port

TEST_SHARDS = 3


def pytest_configure(config: pytest.Config) -> None:
    # A terminated run (CI's timeout, `kill`) tears its cluster down like Ctrl-C does: pytest
    # runs session finalizers on KeyboardInterrupt but not on a bare SIGTERM.
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    root = Path(tempfile.mkdtemp(prefix="messenger-test-"))
    private = root / "private"
    private.mkdir(mode=0o700)
    local = LocalCluster(private / "cluster", shards=TEST_SHARDS, base_port=free_base_port(TEST_SHARDS))

    def teardown() -> None:
        local.destroy()
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(teardown)  # also on Ctrl-C or a crash before the fixture's finally
    try:
        local.up()
        failed = [o for o in migrate(local.topology) if not o.ok]
        assert not failed, f"migrations failed: {failed}"
        yield local
    finally:
        teardown()
        atexit.unregister(teardown)
