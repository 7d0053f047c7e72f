from pathlib import Path

import pytest

from messenger.topology import (
    ShardConfig,
    Topology,
    TopologyError,
    dump_topology,
    load_topology,
    topology_path,
)


def _topology() -> Topology:
    shards = tuple(
        ShardConfig(i, f"shard_{i}", f"postgresql://u:p@h:{6430 + i}/shard_{i}_rw",
                    f"postgresql://u:p@h:{6430 + i}/shard_{i}_ro",
                    f"postgresql://u:p@h:{5440 + i}/messenger", f"postgresql://u:p@h:{5450 + i}/messenger")
        for i in range(3)
    )
    return Topology(epoch=4, shards=shards, redis_url="redis://127.0.0.1:6390/0")


def test_dump_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "topology.toml"
    dump_topology(_topology(), path)
    assert load_topology(path) == _topology()
    assert path.stat().st_mode & 0o077 == 0, "the file holds passwords: owner only"


def test_missing_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"not found.*messenger cluster up"):
        load_topology(tmp_path / "nope.toml")


def test_malformed_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[[shards]]\nname = 'x'\n")
    with pytest.raises(TopologyError, match="malformed"):
        load_topology(path)
    path.write_text("not = [toml")
    with pytest.raises(TopologyError, match="cannot read"):
        load_topology(path)


def test_a_shard_needs_only_an_rw_dsn(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[[shards]]\nindex = 0\nrw_dsn = 'postgresql://a@b/c'\n")
    shard = load_topology(path).shards[0]
    assert shard.name == "shard_0"
    assert shard.ro_dsn == shard.primary_dsn == shard.replica_dsn == "postgresql://a@b/c"


def test_duplicate_shard_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[[shards]]\nindex = 0\nrw_dsn = 'x'\n[[shards]]\nindex = 0\nrw_dsn = 'y'\n")
    with pytest.raises(TopologyError, match="twice"):
        load_topology(path)


def test_environment_names_the_file_when_no_path_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESSENGER_TOPOLOGY", "/etc/messenger/topology.toml")
    assert topology_path() == Path("/etc/messenger/topology.toml")
    assert topology_path("other.toml") == Path("other.toml")
