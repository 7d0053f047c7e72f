"""The event log's retention: a conversation's events older than it become one `log.trimmed`
frame at the newest of their seqs; a client resuming from before it learns it must reload, one
past it replays as before, and the messages stay in the history."""

from __future__ import annotations

import psycopg

from messenger.services.tokens import TokenSigner
from messenger.storage.retention import Retention, RetentionPruner
from messenger.topology import Topology
from tests.e2e.messaging.conftest import ChatServer
from tests.e2e.messaging.support import CONVERSATIONS, create_group, new_users, send


async def test_events_past_the_retention_become_one_trimmed_frame_and_the_rest_replays(
    chat: ChatServer, http, tokens: TokenSigner, topology: Topology
) -> None:
    a, b = await new_users(http, tokens, 2)
    cid = (await create_group(http, a, [b]))["conversation"]["id"]
    sent = [await send(http, a, cid, f"message {i}") for i in range(5)]
    events_url = f"{CONVERSATIONS}/{cid}/events"
    seqs = [e["seq"] for e in (await http.get(events_url, headers=b.headers)).json()["items"]]
    cut = seqs[3]
    shard = chat.runtime.router.shard_for(cid)
    with psycopg.connect(topology.shard(shard).primary_dsn) as conn:
        conn.execute("UPDATE conversation_events SET created_at = now() - interval '31 days' "
                     "WHERE conversation_id = %s AND seq <= %s", (cid, cut))

    pruner = RetentionPruner(chat.runtime.router, Retention(pause_s=0))
    assert (await pruner.prune_once())["conversation_events"] >= 1
    replayed = (await http.get(events_url, headers=b.headers)).json()["items"]
    assert replayed[0] == {"type": "log.trimmed", "conversation_id": cid, "seq": cut}
    assert [e["seq"] for e in replayed] == [s for s in seqs if s >= cut]
    past = (await http.get(events_url, params={"after": cut}, headers=b.headers)).json()["items"]
    assert [e["seq"] for e in past] == [s for s in seqs if s > cut]

    history = (await http.get(f"{CONVERSATIONS}/{cid}/messages", headers=b.headers)).json()["items"]
    assert {m["id"] for m in history} >= {m["id"] for m in sent}
    await pruner.prune_once()  # the marker is not old news to trim again
    assert (await http.get(events_url, headers=b.headers)).json()["items"] == replayed
