"""A session's ordering: consecutive seqs per conversation, gaps filled from the log, replays
paced by the client, a slow client cut off."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping

import pytest

from messenger.services.live import CLOSE_TOO_SLOW, Session

CID = uuid.UUID("01900000-0000-7000-8000-000000000001")
ME = uuid.UUID("01900000-0000-7000-8000-0000000000aa")


def frame(seq: int, conversation: uuid.UUID = CID) -> bytes:
    return json.dumps({"type": "message.created", "conversation_id": str(conversation), "seq": seq}).encode()


class FakeLog:
    page_size = 3

    def __init__(self, last: int, members: set[uuid.UUID] = frozenset({ME}), committed_before_session: int | None = None) -> None:  # type: ignore[assignment]
        self.last = last
        self.members = members
        self.reads = 0
        self.committed_before_session = committed_before_session
        """Events up to this seq committed before the session started; None: every one before a live frame."""

    async def after(self, conversation_id: uuid.UUID, user_id: uuid.UUID, after_seq: int, limit: int | None = None):  # type: ignore[no-untyped-def]
        self.reads += 1
        if user_id not in self.members:
            return None
        top = min(self.last, after_seq + (limit or self.page_size))
        return [(s, frame(s)) for s in range(after_seq + 1, top + 1)]

    async def before(self, conversation_id: uuid.UUID, user_id: uuid.UUID, before_seq: int, since: float):  # type: ignore[no-untyped-def]
        self.reads += 1
        if user_id not in self.members:
            return None
        old = before_seq - 1 if self.committed_before_session is None else self.committed_before_session
        return before_seq - 1, [(s, frame(s)) for s in range(old + 1, before_seq)]

    async def after_many(self, user_id: uuid.UUID, positions: Mapping[uuid.UUID, int]):  # type: ignore[no-untyped-def]
        return {c: await self.after(c, user_id, p) for c, p in positions.items() if user_id in self.members}


async def drain(session: Session, count: int) -> list[int]:
    out = []
    for _ in range(count):
        raw = await asyncio.wait_for(session.next_frame(), 2)
        assert raw is not None
        out.append(json.loads(raw).get("seq"))
    return out


async def test_consecutive_frames_are_delivered_and_repeats_dropped() -> None:
    session = Session(ME, FakeLog(0))
    for seq in (4, 5, 5, 4, 6):
        session.live(frame(seq))
    assert await drain(session, 3) == [4, 5, 6]


async def test_a_gap_is_filled_from_the_log_before_what_follows_it() -> None:
    log = FakeLog(last=9)
    session = Session(ME, log)
    session.live(frame(1))
    session.live(frame(8))  # 2..7 were lost
    session.live(frame(9))
    assert await drain(session, 9) == list(range(1, 10))
    assert log.reads >= 2  # pages of 3


async def test_a_late_earlier_seq_is_delivered_before_the_first_frame_seen(  # item 12
) -> None:
    # Seqs 1-3 were committed before the socket connected; 4 and 5 after, published out of
    # order by two workers: 5 is the first frame this session sees of the conversation.
    session = Session(ME, FakeLog(last=5, committed_before_session=3))
    session.live(frame(5))
    await asyncio.sleep(0.01)
    session.live(frame(4))
    assert await drain(session, 2) == [4, 5]


async def test_resume_replays_after_the_position_and_holds_live_frames_meanwhile() -> None:
    session = Session(ME, FakeLog(last=7), hold_until_resume=True)
    session.live(frame(7))  # arrives before the resume: held, not sent ahead of 3..6
    report = await session.resume({CID: 2})
    assert await drain(session, 5) == [3, 4, 5, 6, 7]
    assert report == {"type": "resumed", "conversations": {str(CID): 7}, "refused": []}


async def test_resume_of_a_conversation_one_is_not_in_is_refused() -> None:
    session = Session(ME, FakeLog(last=3, members=set()))
    assert (await session.resume({CID: 0}))["refused"] == [str(CID)]


async def test_a_client_that_lets_live_frames_pile_up_is_closed() -> None:
    session = Session(ME, FakeLog(0), queue_limit=4)
    for seq in range(1, 6):
        session.live(frame(seq))
    assert session.closed and session.close_code == CLOSE_TOO_SLOW
    assert await session.next_frame() is None


async def test_a_long_replay_waits_for_the_client_instead_of_filling_memory() -> None:
    session = Session(ME, FakeLog(last=40), queue_limit=4)
    resume = asyncio.create_task(session.resume({CID: 0}))
    await asyncio.sleep(0.05)
    assert not resume.done() and not session.closed  # paused with a bounded queue
    assert await drain(session, 40) == list(range(1, 41))
    await asyncio.wait_for(resume, 2)


def test_typing_is_throttled_per_conversation() -> None:
    session = Session(ME, FakeLog(0), typing_interval_s=60)
    assert session.may_type(CID) and not session.may_type(CID)
    assert session.may_type(uuid.uuid4())


@pytest.mark.parametrize("raw", [b"not json", b'{"no": "type"}'])
async def test_undecodable_live_frames_are_dropped(raw: bytes) -> None:
    session = Session(ME, FakeLog(0))
    session.live(raw)
    session.live(frame(1))
    assert await drain(session, 1) == [1]


def test_typing_frames_are_limited_per_socket_before_any_lookup() -> None:
    # Random conversation ids each time: the per-conversation throttle alone would pass them all.
    session = Session(ME, FakeLog(0), typing_per_s=5.0)
    allowed = sum(session.may_type(uuid.uuid4()) for _ in range(100))
    assert allowed == 10  # the burst: two seconds' worth
