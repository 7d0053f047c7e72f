"""`messenger shards add` while `messenger serve` answers, on a cluster of the module's own:
one shard to two under reads and writes (every acknowledged write read back after the move, a
listing paged across the move shows each user once, moved users found, never a 404), then two
to three under message sends (conversations that move keep their history, their sockets get
every message in order, inboxes stay right), with the references audit clean after each."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from messenger.cli import check, shards
from messenger.cluster.local import LocalCluster
from messenger.services.tokens import TokenSigner
from messenger.settings import Settings
from messenger.storage.shards.ring import HashRing
from messenger.topology import load_topology
from tests.e2e.messaging.support import Caller, LiveClient, new_user, open_direct, send
from tests.support.clusters import private_cluster, user_ids
from tests.support.servers import serving
from tests.support.waiting import wait_for_async

USERS = 120
USERS_URL = "/api/v1/users"
OPS_TOKEN = "ops-token-for-the-reshard-test"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[LocalCluster, str]]:
    with private_cluster(1, room_for=3) as local, serving(local.topology_path, MESSENGER_OPS_TOKEN=OPS_TOKEN) as (base, _):
        yield local, base


class Writer(threading.Thread):
    """PATCHes random users until stopped; keeps the last name each acknowledged write set."""

    def __init__(self, base: str, users: list[str]) -> None:
        super().__init__(daemon=True)
        self.base, self.users = base, users
        self.acknowledged: dict[str, str] = {}
        self.failures: Counter[str] = Counter()
        self.slowest_s = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        with httpx.Client(base_url=self.base, timeout=10) as client:
            n = 0
            while not self.stop.is_set():
                user, n = rng.choice(self.users), n + 1
                started = time.monotonic()
                response = client.patch(f"{USERS_URL}/{user}", json={"first_name": f"W{n}"})
                self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                if response.status_code == 200:
                    self.acknowledged[user] = f"W{n}"
                else:
                    self.failures[f"{response.status_code} {response.json().get('error', {}).get('code')}"] += 1


def _app() -> typer.Typer:
    app = typer.Typer()
    shards.register(app)
    check.register(app)
    return app


def test_adding_a_shard_under_traffic_loses_no_write_and_hides_no_user(served: tuple[LocalCluster, str], tmp_path) -> None:
    local, base = served
    with httpx.Client(base_url=base, timeout=10) as client:
        users = [client.post(USERS_URL, json={"first_name": "Before", "last_name": "Move"}).json()["id"]
                 for _ in range(USERS)]
        first = client.get(USERS_URL, params={"limit": 50}).json()

        writer = Writer(base, users)
        writer.start()
        result = CliRunner().invoke(_app(), ["shards", "add", "--yes", "--data-dir", str(local.data_dir),
                                             "--state-dir", str(tmp_path)])
        time.sleep(1.0)  # writes go on after the move too
        writer.stop.set()
        writer.join(timeout=30)
        assert result.exit_code == 0, result.output

        ring = load_topology(local.topology_path)
        moved = user_ids(ring.shard(1).primary_dsn)
        assert ring.epoch == 2 and moved and moved <= set(users)
        assert all(HashRing.for_topology(ring).shard_for(u) == 1 for u in moved)

        assert not writer.failures, writer.failures
        assert writer.slowest_s < 10, writer.slowest_s  # held by the switch, not stuck
        assert len(writer.acknowledged) > 10
        for user, name in writer.acknowledged.items():
            got = client.get(f"{USERS_URL}/{user}", headers={"Cache-Control": "no-cache"})
            assert got.status_code == 200 and got.json()["first_name"] == name, (user, got.text)

        snapshot = client.get("/api/v1/ops/cluster", headers={"Authorization": f"Bearer {OPS_TOKEN}"}).json()
        assert snapshot["epoch"] == 2 and [s["shard"] for s in snapshot["shards"]] == ["shard_0", "shard_1"]
        assert snapshot["resharding"]["phase"] == "done" and "postgresql://" not in json.dumps(snapshot)

        listed = [u["id"] for u in first["items"]]
        cursor = first["next_cursor"]
        while cursor:
            page = client.get(USERS_URL, params={"limit": 50, "cursor": cursor}).json()
            listed += [u["id"] for u in page["items"]]
            cursor = page["next_cursor"]
        assert len(listed) == len(set(listed)) and set(listed) == set(users)

    audit = CliRunner().invoke(_app(), ["check", "references", "--json", "--topology", str(local.topology_path)])
    assert audit.exit_code == 0, audit.output
    assert json.loads(audit.output)["ok"]


def _add(local: LocalCluster, state_dir: Path) -> tuple[int, str]:
    result = CliRunner().invoke(_app(), ["shards", "add", "--yes", "--data-dir", str(local.data_dir),
                                         "--state-dir", str(state_dir)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


async def test_conversations_that_move_keep_history_sockets_and_inbox(served: tuple[LocalCluster, str], tmp_path: Path) -> None:
    """Runs after the test above: 2 → 3 shards, with two sources."""
    local, base = served
    settings = Settings.from_env(local.topology_path, workers=1)
    tokens = TokenSigner(settings.token_keys, access_ttl_s=settings.access_ttl_s)
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        pairs = [(await new_user(http, tokens), await new_user(http, tokens)) for _ in range(12)]
        conversations = [(await open_direct(http, a, b))["conversation"]["id"] for a, b in pairs]
        sockets = [await LiveClient.connect(base.replace("http://", "ws://"), b, ping_interval=None) for _, b in pairs]
        sent: dict[str, list[str]] = {c: [] for c in conversations}

        async def send_round(label: str) -> None:
            for (a, _), c in zip(pairs, conversations, strict=True):
                sent[c].append((await send(http, a, c, label))["id"])

        await send_round("before")
        adding = asyncio.ensure_future(asyncio.to_thread(_add, local, tmp_path))
        while not adding.done():
            await send_round("during")
        code, output = await adding
        assert code == 0, output
        await send_round("after")

        ring = HashRing.for_topology(load_topology(local.topology_path))
        assert any(ring.shard_for(c) == 2 for c in conversations), "no conversation moved: the test proves nothing"
        for socket, (_, b), c in zip(sockets, pairs, conversations, strict=True):
            got = [(await socket.expect("message.created", conversation_id=c))["message"]["id"] for _ in sent[c]]
            assert got == sent[c], (c, ring.shard_for(c))
            await socket.close()
            assert sorted(await _history(http, b, c)) == sorted(sent[c])

            async def inbox_is_current(b: Caller = b, c: str = c) -> bool:  # the relay updates it
                inbox = (await http.get("/api/v1/me/conversations", headers=b.headers)).json()
                return any(e["conversation_id"] == c and e["last_message_preview"] == "after" for e in inbox["items"])

            await wait_for_async(inbox_is_current, 20, f"{c}'s last message in its member's inbox")

    audit = await asyncio.to_thread(  # the command runs its own event loop
        CliRunner().invoke, _app(), ["check", "references", "--json", "--topology", str(local.topology_path)]
    )
    assert audit.exit_code == 0, audit.output


async def _history(http: httpx.AsyncClient, caller: Caller, conversation_id: str) -> list[str]:
    """Every message id of the conversation, page by page (the sends during the add can be
    more than one page)."""
    ids: list[str] = []
    params: dict[str, str | int] = {"limit": 100}
    while True:
        page = (await http.get(f"/api/v1/conversations/{conversation_id}/messages", params=params,
                               headers=caller.headers)).json()
        ids += [m["id"] for m in page["items"]]
        if not page["has_more"] or not page["items"]:
            return ids
        params["before"] = page["items"][-1]["id"]
