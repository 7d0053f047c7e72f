"""The chat at / in a real browser: people register, find each other, chat live, reload, lose
the network and come back, retry a failed send, and cannot open others' conversations."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Request, Route, expect

from tests.e2e.web.conftest import Person, WebServer, conversation_id
from tests.support.tcp_proxy import CuttableLink

SESSION = "messenger.session"


async def _session(person: Person) -> dict[str, Any]:
    return await person.page.evaluate(f"JSON.parse(localStorage.getItem('{SESSION}'))")  # type: ignore[no-any-return]


async def _api(person: Person, web: WebServer) -> httpx.AsyncClient:
    token = (await _session(person))["access_token"]
    return httpx.AsyncClient(base_url=web.base, headers={"Authorization": f"Bearer {token}"}, timeout=10)


async def test_registration_errors_are_shown_beside_their_field(people: Any, artifacts: Path) -> None:
    ada = await people("Ada")
    await ada.register()
    bob = await people("Bob")
    page = bob.page
    await page.goto(bob.base + "/")
    await page.get_by_role("tab", name="Create account").click()
    form = page.locator("#register-form")
    await form.get_by_label("First name", exact=True).fill("Bob")
    await form.get_by_label("Last name", exact=True).fill("Tester")
    await form.get_by_label("Username", exact=True).fill(ada.username.upper())  # taken, in any case
    await form.get_by_label("Email", exact=True).fill(f"{bob.username}@example.com")
    await form.get_by_label("Password", exact=True).fill("short")
    await form.get_by_role("button", name="Create account").click()
    await expect(page.locator("#register-password-error")).to_contain_text("8 to 128")
    await expect(form.get_by_label("Password", exact=True)).to_have_attribute("aria-invalid", "true")
    await form.get_by_label("Password", exact=True).fill("long enough now")
    await form.get_by_role("button", name="Create account").click()
    await expect(page.locator("#register-username-error")).to_contain_text("already taken")
    await expect(page.locator("#register-password-error")).to_be_empty()
    await bob.shot(artifacts, "registration-errors")


async def test_two_people_chat_both_ways_live_with_typing(people: Any, artifacts: Path) -> None:
    ada, bob = await people("Ada"), await people("Bob")
    await ada.register()
    await bob.register()
    await ada.open_chat_with(bob)
    await ada.send("Hi Bob! Fancy an analytical engine?")

    # Bob's inbox shows it live, unread, with its preview; opening it reads it.
    entry = bob.page.locator("#inbox a", has_text=ada.name)
    await expect(entry).to_contain_text("Fancy an analytical engine?")
    await expect(entry.locator(".badge")).to_have_text("1")
    await bob.open_inbox_entry(ada.name)
    await expect(bob.bubbles()).to_have_text(["Hi Bob! Fancy an analytical engine?"])
    await expect(entry.locator(".badge")).to_have_count(0)
    await expect(ada.page.locator("#messages .state.seen")).to_have_text("Seen")

    await bob.page.get_by_label("Message", exact=True).press_sequentially("Always", delay=40)
    await expect(ada.page.locator("#typing")).to_have_text("Bob is typing…")
    await bob.page.get_by_label("Message", exact=True).press("Shift+Enter")
    await bob.page.get_by_label("Message", exact=True).press_sequentially("and a difference engine.")
    await bob.page.get_by_label("Message", exact=True).press("Enter")
    await expect(ada.bubbles()).to_have_text(["Hi Bob! Fancy an analytical engine?", "Always\nand a difference engine."])
    await expect(ada.page.locator("#typing")).to_be_empty()

    await ada.send("Splendid.")
    await expect(bob.bubbles()).to_have_count(3)
    assert await bob.texts() == await ada.texts()
    await ada.shot(artifacts, "chat-ada")
    await bob.shot(artifacts, "chat-bob")


async def test_edit_and_delete_reach_the_other_person(people: Any, artifacts: Path) -> None:
    ada, bob = await people("Ada"), await people("Bob")
    await ada.register()
    await bob.register()
    await ada.open_chat_with(bob)
    await ada.send("Teh first message")
    await ada.send("A mistake")
    await bob.open_inbox_entry(ada.name)
    await expect(bob.bubbles()).to_have_count(2)

    first = ada.page.locator("#messages li.msg", has_text="Teh first message")
    await first.hover()
    await first.get_by_role("button", name="Edit message").click()
    editor = ada.page.get_by_role("textbox", name="Edit message")
    await editor.fill("The first message")
    await editor.press("Enter")
    second = ada.page.locator("#messages li.msg", has_text="A mistake")
    await second.hover()
    await second.get_by_role("button", name="Delete message").click()
    await second.get_by_role("button", name="Delete message").click()  # confirm

    await expect(bob.bubbles()).to_have_text(["The first message", "Message deleted"])
    await expect(bob.page.locator("#messages li.msg").first.locator(".edited")).to_have_text("edited")
    await bob.shot(artifacts, "edit-and-delete")


async def test_a_reload_keeps_the_session_and_the_history(people: Any, artifacts: Path) -> None:
    ada, bob = await people("Ada"), await people("Bob")
    await ada.register()
    await bob.register()
    conversation = await ada.open_chat_with(bob)
    for text in ("one", "two", "three"):
        await ada.send(text)
    await expect(ada.page.locator("#messages .state[data-state=sent], #messages .state.seen")).to_have_count(3)

    await ada.page.reload()
    await expect(ada.page.locator("#conv-title")).to_have_text(bob.name)
    await expect(ada.bubbles()).to_have_text(["one", "two", "three"])
    assert conversation_id(ada.page) == conversation

    # An access token that expired while the tab was closed: the page rotates the refresh token.
    before = await _session(ada)
    await ada.page.evaluate(f"""() => {{
        const s = JSON.parse(localStorage.getItem('{SESSION}')); s.expires_at = 0;
        localStorage.setItem('{SESSION}', JSON.stringify(s)); }}""")
    await ada.page.reload()
    await expect(ada.bubbles()).to_have_text(["one", "two", "three"])
    after = await _session(ada)
    assert after["refresh_token"] != before["refresh_token"] and after["expires_at"] > before["expires_at"] - 1

    await ada.send("four")  # the socket and the API work with the new tokens
    await bob.open_inbox_entry(ada.name)
    await expect(bob.bubbles()).to_have_text(["one", "two", "three", "four"])

    # A session that cannot be renewed (revoked, expired) goes back to sign-in, never a blank page.
    await ada.page.evaluate(f"""() => {{
        const s = JSON.parse(localStorage.getItem('{SESSION}')); s.expires_at = 0; s.refresh_token = s.user_id + '.spent';
        localStorage.setItem('{SESSION}', JSON.stringify(s)); }}""")
    await ada.page.reload()
    await expect(ada.page.locator("#auth-notice")).to_contain_text("session has ended")
    await ada.page.locator("#signin-form").get_by_label("Username or email").fill(ada.username)
    await ada.page.locator("#signin-form").get_by_label("Password", exact=True).fill("correct horse battery")
    await ada.page.locator("#signin-form").get_by_role("button", name="Sign in").click()
    await expect(ada.bubbles()).to_have_text(["one", "two", "three", "four"])
    await ada.shot(artifacts, "reload")


async def test_older_history_pages_in_on_scroll_without_gaps_or_repeats(
    people: Any, web: WebServer, artifacts: Path
) -> None:
    ada, bob = await people("Ada", height=640), await people("Bob")
    await ada.register()
    await bob.register()
    conversation = await ada.open_chat_with(bob)
    async with await _api(bob, web) as api:
        for n in range(1, 101):
            response = await api.post(f"/api/v1/conversations/{conversation}/messages",
                                      json={"body": f"m{n:03}", "client_message_id": f"seed-{n}"})
            assert response.status_code == 201, response.text
    await ada.page.reload()
    await expect(ada.bubbles().last).to_have_text("m100")
    edge = ada.page.locator("#history-edge")
    for _ in range(10):
        if await edge.inner_text() == "This is the beginning of the conversation.":
            break
        await ada.page.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
        await ada.page.wait_for_timeout(300)
    await expect(edge).to_have_text("This is the beginning of the conversation.")
    assert await ada.texts() == [f"m{n:03}" for n in range(1, 101)]
    await ada.shot(artifacts, "history-paging")


async def test_the_socket_cut_and_restored_while_the_other_sends_misses_and_repeats_nothing(
    people: Any, web: WebServer, artifacts: Path
) -> None:
    link = CuttableLink("127.0.0.1", web.port)
    await link.restore()
    try:
        ada = await people("Ada", base=f"http://127.0.0.1:{link.port}")  # her network is this link
        bob = await people("Bob")
        await ada.register()
        await bob.register()
        await ada.open_chat_with(bob)
        await ada.send("before")
        await bob.open_inbox_entry(ada.name)
        await expect(bob.bubbles()).to_have_text(["before"])

        await link.cut()
        await expect(ada.page.locator("#banner")).to_contain_text("offline")
        missed = [f"while away {n}" for n in range(1, 6)]
        for text in missed:
            await bob.send(text)
        await expect(bob.page.locator("#messages .state[data-state=sent], #messages .state.seen")).to_have_count(5)
        await ada.page.wait_for_timeout(1500)  # a reconnect attempt or two fails meanwhile
        await link.restore()

        # Reconnects on its own (backoff), resumes after its last seq: each message exactly once.
        await expect(ada.page.locator("#banner")).to_contain_text("Back online", timeout=30_000)
        await bob.send("after")
        await expect(ada.bubbles().last).to_have_text("after")
        assert await ada.texts() == ["before", *missed, "after"] == await bob.texts()
        await ada.send("got them all")
        await expect(bob.bubbles().last).to_have_text("got them all")
        await ada.shot(artifacts, "reconnect-ada")
    finally:
        await link.cut()


async def test_a_failed_send_retried_makes_one_message(people: Any, web: WebServer, artifacts: Path) -> None:
    ada, bob = await people("Ada"), await people("Bob")
    await ada.register()
    await bob.register()
    conversation = await ada.open_chat_with(bob)
    sends: list[str] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/messages"):
            sends.append(json.loads(request.post_data or "{}")["client_message_id"])

    ada.page.on("request", record)
    sends_pattern = re.compile(r".*/api/v1/conversations/[^/]+/messages$")

    async def drop(route: Route) -> None:
        await route.abort("internetdisconnected")

    await ada.page.route(sends_pattern, drop)
    await ada.send("Does this arrive once?")
    failed = ada.page.locator("#messages li.msg.failed")
    await expect(failed).to_contain_text("Not sent")
    await ada.page.unroute(sends_pattern, drop)
    await failed.get_by_role("button", name="Retry").click()

    await expect(ada.page.locator("#messages li.msg.failed")).to_have_count(0)
    await expect(ada.bubbles()).to_have_text(["Does this arrive once?"])
    await bob.open_inbox_entry(ada.name)
    await expect(bob.bubbles()).to_have_text(["Does this arrive once?"])
    assert len(sends) == 2 and sends[0] == sends[1], sends  # the retry reused the client_message_id

    async with await _api(ada, web) as api:  # even a third copy of the request stores nothing new
        again = await api.post(f"/api/v1/conversations/{conversation}/messages",
                               json={"body": "Does this arrive once?", "client_message_id": sends[0]})
        assert again.status_code == 200
        history = (await api.get(f"/api/v1/conversations/{conversation}/messages")).json()["items"]
    assert [m["body"] for m in history] == ["Does this arrive once?"]
    await ada.shot(artifacts, "retry")


async def test_an_outsider_who_guesses_a_conversation_url_sees_not_found(people: Any, artifacts: Path) -> None:
    ada, bob, eve = await people("Ada"), await people("Bob"), await people("Eve")
    for person in (ada, bob, eve):
        await person.register()
    conversation = await ada.open_chat_with(bob)
    await ada.send("Just between us")

    await eve.page.goto(f"{eve.base}/c/{conversation}")
    await expect(eve.page.get_by_role("heading", name="Conversation not found")).to_be_visible()
    await expect(eve.page.get_by_text("Just between us")).to_have_count(0)
    await expect(eve.page.locator("#inbox a")).to_have_count(0)
    await eve.page.goto(f"{eve.base}/c/not-a-uuid")
    await expect(eve.page.get_by_role("heading", name="Conversation not found")).to_be_visible()
    await eve.shot(artifacts, "not-found")


async def test_groups_with_a_title_and_members_added_and_removed(people: Any, artifacts: Path) -> None:
    ada, bob, cy = await people("Ada"), await people("Bob"), await people("Cy")
    for person in (ada, bob, cy):
        await person.register()
    page = ada.page
    await page.get_by_role("button", name="+ New group").click()
    dialog = page.locator("#group-dialog")
    await dialog.get_by_label("Title", exact=True).fill("Difference engine")
    await dialog.get_by_label("Members", exact=True).fill(bob.username)
    await dialog.get_by_label("Members", exact=True).press("Enter")
    await expect(dialog.locator("#group-chips")).to_contain_text(bob.name)
    await dialog.get_by_role("button", name="Create group").click()
    await expect(page.locator("#conv-title")).to_have_text("Difference engine")
    await expect(page.locator("#conv-sub")).to_have_text("2 members")
    await ada.send("Welcome, Bob")

    await bob.open_inbox_entry("Difference engine")
    await expect(bob.bubbles()).to_have_text(["Welcome, Bob"])

    await page.get_by_role("button", name="Members").click()
    await page.get_by_label("Add a member by username").fill(cy.username)
    await page.get_by_label("Add a member by username").press("Enter")
    await expect(page.locator("#members-list")).to_contain_text(cy.name)
    await expect(page.locator("#conv-sub")).to_have_text("3 members")
    await cy.open_inbox_entry("Difference engine")

    await page.get_by_role("button", name=f"Remove {bob.name}").click()
    await expect(page.locator("#members-list")).not_to_contain_text(bob.name)
    await expect(bob.page.get_by_role("heading", name="Conversation not found")).to_be_visible()
    await ada.send("Just us now, Cy")
    await expect(cy.bubbles()).to_have_text(["Welcome, Bob", "Just us now, Cy"])
    await ada.shot(artifacts, "group")


async def test_at_phone_width_one_pane_shows_at_a_time(people: Any, artifacts: Path) -> None:
    ada, bob = await people("Ada", width=390, height=780), await people("Bob")
    await ada.register()
    await bob.register()
    await bob.open_chat_with(ada)
    await bob.send("Hello from a desk")
    await expect(ada.page.locator(".sidebar")).to_be_visible()
    await ada.open_inbox_entry(bob.name)
    await expect(ada.page.locator(".sidebar")).to_be_hidden()
    await expect(ada.bubbles()).to_have_text(["Hello from a desk"])
    await ada.send("Hello from a phone")
    await expect(bob.bubbles().last).to_have_text("Hello from a phone")
    await ada.shot(artifacts, "phone")
    await ada.page.get_by_role("button", name="Back to chats").click()
    await expect(ada.page.locator("#inbox a", has_text=bob.name)).to_be_visible()
