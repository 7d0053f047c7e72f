from __future__ import annotations

from pathlib import Path

import pytest

from messenger.cluster.pgbouncer import DEFAULT_POOL_SIZE
from messenger.settings import Settings, available_cpus

TOPOLOGY = """
epoch = 3
[redis]
url = "redis://127.0.0.1:6390/0"
[[shards]]
index = 0
rw_dsn = "postgresql://u@127.0.0.1:6430/shard_0_rw"
"""


@pytest.fixture
def topology_file(tmp_path: Path) -> Path:
    path = tmp_path / "topology.toml"
    path.write_text(TOPOLOGY)
    return path


def test_available_cpus_respects_the_affinity_mask() -> None:
    import os

    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_pools_share_pgbouncer_between_workers(topology_file: Path) -> None:
    settings = Settings.from_env(topology_file, workers=2)
    assert settings.pool_max_size * settings.workers <= max(DEFAULT_POOL_SIZE, 2 * settings.workers)
    assert settings.pool_max_size >= 2


def test_pool_size_can_be_overridden(topology_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESSENGER_POOL_MAX_SIZE", "7")
    assert Settings.from_env(topology_file, workers=2).pool_max_size == 7


def test_cursor_secret_is_the_same_in_every_worker(topology_file: Path) -> None:
    a = Settings.from_env(topology_file, workers=1).cursor_secret
    b = Settings.from_env(topology_file, workers=4).cursor_secret
    assert a == b and len(a) >= 16


def test_configured_cursor_secret_wins(topology_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESSENGER_CURSOR_SECRET", "s" * 32)
    assert Settings.from_env(topology_file).cursor_secret == b"s" * 32


def test_ops_token_is_off_unless_configured(topology_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESSENGER_OPS_TOKEN", raising=False)
    assert Settings.from_env(topology_file).ops_token == ""
    monkeypatch.setenv("MESSENGER_OPS_TOKEN", " t0ken \n")
    settings = Settings.from_env(topology_file)
    assert settings.ops_token == "t0ken" and "t0ken" not in repr(settings)
