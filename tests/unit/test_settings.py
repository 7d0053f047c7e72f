from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest

from messenger.bootstrap import relay_retention, retention
from messenger.cluster.pgbouncer import DEFAULT_POOL_SIZE
from messenger.settings import (
    SECRETS_FILE_NAME,
    Settings,
    SettingsError,
    available_cpus,
    write_secrets_file,
)
from messenger.topology import load_topology

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


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit keys unless a test removes them; no MESSENGER_* secret leaks in from outside."""
    for name in ("TOKEN_SECRETS", "CURSOR_SECRETS", "TOKEN_SECRET", "CURSOR_SECRET", "SECRETS_FILE", "PROFILE"):
        monkeypatch.delenv("MESSENGER_" + name, raising=False)


def _with_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESSENGER_TOKEN_SECRETS", f"t1:{'t' * 32}")
    monkeypatch.setenv("MESSENGER_CURSOR_SECRETS", f"c1:{'c' * 32}")


def test_pools_share_pgbouncer_between_workers(topology_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_keys(monkeypatch)
    settings = Settings.from_env(topology_file, workers=2)
    assert settings.pool_max_size * settings.workers <= max(DEFAULT_POOL_SIZE, 2 * settings.workers)
    assert settings.pool_max_size >= 2


def test_pool_size_can_be_overridden(topology_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_keys(monkeypatch)
    monkeypatch.setenv("MESSENGER_POOL_MAX_SIZE", "7")
    assert Settings.from_env(topology_file, workers=2).pool_max_size == 7


def test_without_secrets_outside_the_dev_profile_it_refuses_naming_the_variables(
    topology_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESSENGER_PROFILE", raising=False)
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(topology_file)
    assert "MESSENGER_TOKEN_SECRETS" in str(refused.value) and "MESSENGER_CURSOR_SECRETS" in str(refused.value)
    assert not (topology_file.parent / SECRETS_FILE_NAME).exists()


def test_keys_are_never_derived_from_the_topology(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same topology (DSNs, epoch) in two places gives different keys in the dev profile.
    monkeypatch.setenv("MESSENGER_PROFILE", "dev")
    keys = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        path = tmp_path / name / "topology.toml"
        path.write_text(TOPOLOGY)
        keys.append(Settings.from_env(path).token_keys.current.secret)
    assert keys[0] != keys[1]


def test_the_dev_profile_creates_a_private_secrets_file_every_worker_shares(
    topology_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESSENGER_PROFILE", "dev")
    a = Settings.from_env(topology_file, workers=1)
    b = Settings.from_env(topology_file, workers=4)
    secrets = topology_file.parent / SECRETS_FILE_NAME
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert a.token_keys == b.token_keys and a.cursor_keys == b.cursor_keys
    assert a.token_keys.current.secret != a.cursor_keys.current.secret
    assert len(a.token_keys.current.secret) >= 32


def test_a_secrets_file_readable_by_others_is_refused(topology_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESSENGER_PROFILE", raising=False)
    secrets = topology_file.parent / SECRETS_FILE_NAME
    assert write_secrets_file(secrets)
    assert Settings.from_env(topology_file).token_keys.current.kid
    secrets.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        Settings.from_env(topology_file)


def test_environment_keys_win_and_carry_previous_keys(topology_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESSENGER_TOKEN_SECRETS", f"t2:{'n' * 32}, t1:{'o' * 32}")
    monkeypatch.setenv("MESSENGER_CURSOR_SECRETS", f"c1:{'c' * 32}")
    settings = Settings.from_env(topology_file)
    assert [k.kid for k in settings.token_keys.keys] == ["t2", "t1"]
    assert settings.token_keys.current.secret == b"n" * 32
    assert settings.cursor_keys.get("c1") is not None


@pytest.mark.parametrize("value", ["no-kid-here", f"t1:{'s' * 8}", f"t1:{'a' * 32},t1:{'b' * 32}", f"b@d:{'a' * 32}"])
def test_malformed_or_short_keys_are_refused(topology_file: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MESSENGER_TOKEN_SECRETS", value)
    monkeypatch.setenv("MESSENGER_CURSOR_SECRETS", f"c1:{'c' * 32}")
    with pytest.raises(SettingsError, match="MESSENGER_TOKEN_SECRETS"):
        Settings.from_env(topology_file)


def test_the_old_single_secret_variables_are_refused_with_the_new_names(
    topology_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESSENGER_CURSOR_SECRET", "s" * 32)
    with pytest.raises(SettingsError, match="MESSENGER_CURSOR_SECRETS"):
        Settings.from_env(topology_file)


def test_ops_token_is_off_unless_configured(topology_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_keys(monkeypatch)
    monkeypatch.delenv("MESSENGER_OPS_TOKEN", raising=False)
    assert Settings.from_env(topology_file).ops_token == ""
    monkeypatch.setenv("MESSENGER_OPS_TOKEN", " t0ken \n")
    settings = Settings.from_env(topology_file)
    assert settings.ops_token == "t0ken" and "t0ken" not in repr(settings)


def test_retention_defaults_keep_the_ledger_a_week_and_the_rest_a_day(
    topology_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_keys(monkeypatch)
    kept = retention(Settings.from_env(topology_file, workers=2))
    assert (kept.delivered_outbox, kept.applied_events, kept.refresh_tokens) == (
        timedelta(days=1), timedelta(days=7), timedelta(days=1),
    )
    monkeypatch.setenv("MESSENGER_APPLIED_EVENTS_RETENTION", "3600")
    assert retention(Settings.from_env(topology_file, workers=2)).applied_events == timedelta(hours=1)


def test_the_relay_prunes_with_the_same_retention_settings_as_the_api_without_signing_keys(
    topology_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESSENGER_DELIVERED_OUTBOX_RETENTION", "120")
    monkeypatch.setenv("MESSENGER_APPLIED_EVENTS_RETENTION", "3600")
    monkeypatch.setenv("MESSENGER_REFRESH_TOKEN_RETENTION", "60")
    _with_keys(monkeypatch)
    api = retention(Settings.from_env(topology_file))
    for name in ("TOKEN_SECRETS", "CURSOR_SECRETS"):
        monkeypatch.delenv(f"MESSENGER_{name}", raising=False)
    relay = relay_retention(load_topology(topology_file))
    assert relay == api and relay.delivered_outbox == timedelta(seconds=120)
    assert relay.applied_events == timedelta(hours=1) and relay.refresh_tokens == timedelta(minutes=1)
