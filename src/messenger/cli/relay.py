"""`messenger relay`: the outbox relay and claims sweeper as a process of their own."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from messenger.bootstrap import run_background
from messenger.cli.console import console, fail
from messenger.topology import TopologyError, load_topology


def register(app: typer.Typer) -> None:
    app.command(name="relay")(relay)


def relay(
    topology: Annotated[str | None, typer.Option("--topology", envvar="MESSENGER_TOPOLOGY")] = None,
) -> None:
    """Deliver cross-shard events and settle abandoned claims until stopped (Ctrl-C).

    API workers run the same loop themselves; this is for deployments that separate them.
    Several relays at once are safe.
    """
    try:
        shards = load_topology(topology)
    except TopologyError as exc:
        fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console.print(f"relaying {len(shards.shards)} shards' outboxes (Ctrl-C to stop)")

    try:
        asyncio.run(run_background(shards))
    except KeyboardInterrupt:
        console.print("relay stopped")
