"""Fixtures for the browser tests: the real server (`messenger serve`, granian) over the
session's cluster, Debian's Chromium driven by Playwright, and people who use the chat.

Chromium is the system's (`chromium`, installed by scripts/install-system-packages.sh), never
a browser Playwright downloads. Each test's people get fresh browser contexts (their own
storage, like separate browsers); `browser.launch` gives Chromium a fresh user-data dir.
Screenshots of each test's end state land in var/test-artifacts/web/.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright, expect

from tests.support.servers import serving

ROOT = Path(__file__).parents[3]
ARTIFACTS = ROOT / "var" / "test-artifacts" / "web"
OPS_TOKEN = "ops-" + uuid.uuid4().hex
PASSWORD = "correct horse battery"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
expect.set_options(timeout=15_000)


def chromium_path() -> str:
    path = os.environ.get("MESSENGER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Debian's chromium is missing: `make setup` (scripts/install-system-packages.sh) installs it")
    return path


@dataclass(frozen=True)
class WebServer:
    base: str
    port: int


@pytest.fixture(scope="session")
def web(cluster: Any) -> Iterator[WebServer]:
    with serving(
        cluster.topology_path, workers=1, MESSENGER_OPS_TOKEN=OPS_TOKEN,
        MESSENGER_SEND_RATE="1000", MESSENGER_SEND_BURST="1000",
    ) as (base, _pid):
        yield WebServer(base, int(base.rsplit(":", 1)[1]))


@pytest.fixture(scope="session")
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
async def browser(playwright: Playwright) -> AsyncIterator[Browser]:
    browser = await playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
    yield browser
    await browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@dataclass
class Person:
    """Someone at a browser: their own context (storage) and one tab."""

    page: Page
    context: BrowserContext
    base: str
    username: str
    first_name: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.first_name} Tester"

    async def register(self) -> None:
        page = self.page
        await page.goto(self.base + "/")
        await page.get_by_role("tab", name="Create account").click()
        form = page.locator("#register-form")
        await form.get_by_label("First name", exact=True).fill(self.first_name)
        await form.get_by_label("Last name", exact=True).fill("Tester")
        await form.get_by_label("Username", exact=True).fill(self.username)
        await form.get_by_label("Email", exact=True).fill(f"{self.username}@example.com")
        await form.get_by_label("Password", exact=True).fill(PASSWORD)
        await form.get_by_role("button", name="Create account").click()
        await expect(page.locator("#me-name")).to_have_text(self.name)

    async def open_chat_with(self, other: Person) -> str:
        """Find `other` by username, open the direct conversation; its id."""
        page = self.page
        await page.get_by_label("Start a chat").fill(other.username)
        await page.get_by_label("Start a chat").press("Enter")
        await expect(page.locator("#find-result")).to_contain_text(other.name)
        await page.get_by_role("button", name="Message").click()
        await expect(page.locator("#conv-title")).to_have_text(other.name)
        return conversation_id(page)

    async def open_inbox_entry(self, title: str) -> str:
        await self.page.locator("#inbox a", has_text=title).click()
        await expect(self.page.locator("#conv-title")).to_have_text(title)
        return conversation_id(self.page)

    async def send(self, text: str) -> None:
        box = self.page.get_by_label("Message", exact=True)
        await box.fill(text)
        await box.press("Enter")

    def bubbles(self) -> Any:
        return self.page.locator("#messages li.msg .body")

    async def texts(self) -> list[str]:
        return [t.strip() for t in await self.bubbles().all_inner_texts()]

    async def shot(self, artifacts: Path, name: str) -> None:
        await self.page.screenshot(path=str(artifacts / f"{name}.png"))


def conversation_id(page: Page) -> str:
    match = re.search(r"/c/([0-9a-f-]{36})$", page.url)
    assert match, page.url
    return match.group(1)


@pytest.fixture
async def people(browser: Browser, web: WebServer) -> AsyncIterator[Any]:
    """Makes people (`await people("ada")` or with `base=` to come through another address)."""
    made: list[Person] = []

    async def make(first_name: str, *, base: str | None = None, width: int = 1100, height: int = 760) -> Person:
        context = await browser.new_context(viewport={"width": width, "height": height})
        page = await context.new_page()
        person = Person(page, context, base or web.base, f"{first_name.lower()}{uuid.uuid4().hex[:10]}", first_name)
        page.on("request", lambda r: person.requests.append(r.url))
        page.on("pageerror", lambda e: person.errors.append(str(e)))
        made.append(person)
        return person

    yield make
    for person in made:
        assert not person.errors, f"{person.first_name}'s page threw: {person.errors}"
        hosts = {re.sub(r"^\w+://([^/:]+).*", r"\1", url) for url in person.requests if not url.startswith("data:")}
        assert hosts <= {"127.0.0.1"}, f"{person.first_name}'s page reached out to {hosts}"
        await person.context.close()
