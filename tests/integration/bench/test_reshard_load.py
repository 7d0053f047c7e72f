"""The resharding run's load and its checks against the real server, with no reshard: every
operation is answered, and the read-backs find every acknowledged write and message."""

from __future__ import annotations

import asyncio
from typing import Any

import uvloop

from messenger.bench.phase import Target
from messenger.bench.reshard_analysis import MovingKeys
from messenger.bench.reshard_chat import MessageLedger, set_up_chat, verify_messages
from messenger.bench.reshard_load import Mix, ReshardLoad, verify
from messenger.bench.server import MESSAGING_ENV
from tests.support.servers import serving


async def _run(target: Target) -> tuple[ReshardLoad, Any, Any]:
    messages = MessageLedger()
    chat = await set_up_chat(target, messages, accounts=6, group_size=3, follows_each=2, messages=30,
                             timeout=10.0, note=lambda _: None)
    assert (chat.accounts, chat.follows, chat.conversations, chat.messages) == (6, 12, 2, 30)
    keys = MovingKeys([(0, 2**31)])
    mix = Mix(get=0.3, history=0.2, patch=0.2, create=0.1, send=0.2)
    load = ReshardLoad(target, [], keys, connections=4, rate=80.0, mix=mix, timeout=10.0,
                       chatters=chat.chatters, messages=messages)
    stop = asyncio.Event()
    running = asyncio.ensure_future(load.run(stop))
    await asyncio.sleep(3.0)
    stop.set()
    await running
    users = await verify(target, load.ledger, load.key_class, 10.0)
    found = await verify_messages(target, messages, chat.readers, load.key_class, 10.0)
    return load, users, found


def test_the_load_is_answered_and_every_acknowledged_write_and_message_reads_back(cluster: Any) -> None:
    with serving(cluster.topology_path, workers=1, **MESSAGING_ENV) as (base, _pid):
        port = int(base.rsplit(":", 1)[1])
        load, users, found = uvloop.run(_run(Target("127.0.0.1", port)))
    ops = {s.op for s in load.samples}
    assert ops == {"get", "history", "patch", "create", "send"}, ops
    assert all(s.ok for s in load.samples), [s for s in load.samples if not s.ok][:5]
    assert load.stale_reads == 0, load.stale_samples
    assert users.checked > 0 and users.lost == []
    assert load.messages.sent > 0 and found.checked == 30 + load.messages.sent
    assert found.lost == [] and found.duplicated == [] and found.unreadable == []
