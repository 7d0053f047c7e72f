from pathlib import Path

import pytest

from messenger.cluster.layout import ClusterLayout


def test_default_ports_match_the_design() -> None:
    layout = ClusterLayout(Path("var/cluster"), shards=5)
    assert [layout.port(i, "primary") for i in range(5)] == [5440, 5441, 5442, 5443, 5444]
    assert [layout.port(i, "replica") for i in range(5)] == [5450, 5451, 5452, 5453, 5454]
    assert [layout.port(i, "pgbouncer") for i in range(5)] == [6430, 6431, 6432, 6433, 6434]
    assert layout.redis_port == 6390


def test_base_port_moves_every_port_together() -> None:
    layout = ClusterLayout(Path("x"), shards=2, base_port=20000)
    assert layout.all_ports() == [20000, 20010, 20990, 20001, 20011, 20991, 20950]


def test_all_ports_are_distinct_for_the_largest_cluster() -> None:
    ports = ClusterLayout(Path("x"), shards=10).all_ports()
    assert len(ports) == len(set(ports)) == 31


@pytest.mark.parametrize("shards", [0, 11])
def test_shard_count_out_of_range_is_refused(shards: int) -> None:
    with pytest.raises(ValueError, match="1 to 10 shards"):
        ClusterLayout(Path("x"), shards=shards)
