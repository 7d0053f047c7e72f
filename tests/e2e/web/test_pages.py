"""The operator's page at /cluster and the API docs at /docs, in a real browser."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, expect
from redis import Redis

from messenger.cli.reshard_report import report_json
from messenger.storage.redis import reshard_status
from messenger.storage.resharding.plan import plan_add, planned_shard
from messenger.storage.resharding.workflow import WorkflowState
from tests.e2e.web.conftest import OPS_TOKEN, WebServer


async def test_the_cluster_page_refuses_without_the_ops_token_and_then_shows_every_shard(
    browser: Browser, web: WebServer, cluster: Any, artifacts: Path
) -> None:
    assert httpx.get(f"{web.base}/api/v1/ops/cluster").status_code == 401
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    try:
        await page.goto(f"{web.base}/cluster")
        token = page.get_by_label("Ops token")
        await token.fill("not-the-token")
        await token.press("Enter")
        await expect(page.locator("#ops-token-error")).to_contain_text("not valid")
        await expect(page.locator("#shards .shard")).to_have_count(0)

        await token.fill(OPS_TOKEN)
        await page.get_by_role("button", name="Show the cluster").click()
        names = [s.name for s in cluster.topology.shards]
        await expect(page.locator("#shards .shard h2")).to_have_text([f"{n}healthy" for n in names])
        for name in names:
            card = page.locator(f'#shards [data-shard="{name}"]')
            await expect(card.locator("tbody tr")).to_have_count(3)  # primary, replica, PgBouncer
            await expect(card.locator(".pill.up")).to_have_count(4)  # healthy + three servers
        await expect(page.locator("#chart svg rect")).to_have_count(2 * len(names))
        await expect(page.locator("#relay tbody tr")).to_have_count(len(names))
        await expect(page.locator("#resharding")).to_have_text("No resharding workflow has run.")
        with _announced_copy(cluster):  # a workflow copying, as `messenger shards add` announces it
            await expect(page.locator('#resharding [data-phase="copy"]')).to_be_visible(timeout=10_000)
            await expect(page.locator("#resharding tbody tr")).to_have_text(
                [re.compile(r"copy\s*2\.1 s\s*14 tables streaming"), re.compile(r"copy users\s*40 / 100")]
            )
        await expect(page.locator("#resharding")).to_have_text("No resharding workflow has run.", timeout=10_000)
        first = await page.locator("#live").inner_text()
        await expect(page.locator("#live")).not_to_have_text(first, timeout=10_000)  # refreshed live
        await page.screenshot(path=str(artifacts / "cluster.png"), full_page=True)

        await page.reload()  # the token stays for this tab's session
        await expect(page.locator("#shards .shard")).to_have_count(len(names))
    finally:
        await context.close()


@contextmanager
def _announced_copy(cluster: Any) -> Iterator[None]:
    plan = plan_add(cluster.topology, (planned_shard(len(cluster.topology.shards)),))
    state = WorkflowState("r20261203000000", plan, phase="copy", findings={
        "copy": {"tables": 14, "rows": 0, "seconds": 2.1},
        "progress": {"phase": "copy", "tables_ready": 3, "tables": 14, "rows": {"users": [40, 100], "outbox": [0, 0]}},
    })
    redis = Redis.from_url(cluster.topology.redis_url)
    try:
        redis.set(reshard_status.KEY, json.dumps(report_json(state)))
        yield
    finally:
        redis.delete(reshard_status.KEY)
        redis.close()


async def test_docs_render_the_operations_list_without_internet(
    browser: Browser, web: WebServer, artifacts: Path
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    hosts: set[str] = set()
    page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
    try:
        await page.goto(f"{web.base}/docs")
        operations = page.locator(".opblock-summary-path")
        await expect(operations.first).to_be_visible()
        paths = set(await operations.all_inner_texts())
        assert {"/api/v1/users", "/api/v1/conversations", "/api/v1/users/by-username/{username}",
                "/api/v1/ops/cluster"} <= {p.replace("\u200b", "").strip() for p in paths}
        assert hosts == {f"127.0.0.1:{web.port}"}, hosts
        await page.screenshot(path=str(artifacts / "docs.png"))
    finally:
        await context.close()
