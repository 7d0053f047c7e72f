"""`messenger demo chat` against a running server: both sockets print the conversation, and the
reconnecting one resumes with what it missed."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.e2e.messaging.conftest import ChatServer


async def test_demo_chat_shows_both_sockets_and_a_gapless_resume(chat: ChatServer) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[3] / "src"), COLUMNS="200")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "messenger", "demo", "chat", "--base-url", chat.base, "--messages", "1",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    text = output.decode()
    assert process.returncode == 0, text
    assert "Alice's socket <- message.created" in text and "Bob's socket <- message.created" in text
    assert "Bob's socket <- typing" in text and "Alice's socket <- typing" in text  # each sees the other
    resumed = text.split("Bob reconnects")[1]
    assert resumed.index("'Are you there?'") < resumed.index("'Call me when you are back'") < resumed.index('"resumed"')
