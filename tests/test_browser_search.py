"""Searching as alice does it in real headless Chromium: Ctrl+K, results as
she types, a result that opens its message scrolled into view, Escape."""

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from conversations.models import Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

PASSWORD = "alice-password-123"


@pytest.fixture
def alice_in(page):
    alice = get_user_model().objects.create_user("alice", password=PASSWORD)
    page.goto("/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    return alice


def test_ctrl_k_searches_as_one_types_and_a_result_opens_its_message(page, alice_in):
    conv = Conversation.objects.create(owner=alice_in, title="Travel", model_key="demo:demo")
    parent, target = None, None
    for number in range(40):
        text = "明日は東京タワーに行きます" if number == 3 else f"filler message {number} " + "lorem ipsum " * 20
        parent = Message.objects.create(
            conversation=conv, parent=parent, role="user" if number % 2 == 0 else "assistant", content=text
        )
        target = parent if number == 3 else target
    page.goto("/")
    expect(page.locator("#conversation-list")).to_be_visible()
    page.keyboard.press("Control+k")
    expect(page.locator("#search-q")).to_be_focused()
    page.keyboard.type("東京タワー")
    hit = page.locator(f"#hit-{target.id}")
    expect(hit.locator("mark")).to_have_text("東京タワー")
    expect(page.locator("#conversation-list")).to_be_hidden()
    hit.click()
    page.wait_for_url(f"**/c/{conv.id}/?m={target.id}#msg-{target.id}")
    expect(page.locator(f"#msg-{target.id}")).to_be_in_viewport()
    # Escape empties the box and the list comes back.
    page.keyboard.press("Control+k")
    page.keyboard.type("filler")
    expect(page.locator(".search-hit").first).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#search-q")).to_have_value("")
    expect(page.locator("#conversation-list")).to_be_visible()
