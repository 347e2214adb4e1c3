"""The sidebar in real headless Chromium: the next page loads as alice
scrolls the sidebar, and a pin moves the entry under Pinned in place."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import expect

from conversations.models import Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]


@pytest.fixture
def many():
    alice = get_user_model().objects.create_user("alice", password="alice-password-123")
    base = timezone.now() - timedelta(days=2)
    made = []
    for n in range(70):
        conv = Conversation.objects.create(owner=alice, title=f"Chat number {n}", model_key="demo:demo")
        Message.objects.create(conversation=conv, role="user", content="Hi")
        Conversation.objects.filter(pk=conv.pk).update(updated_at=base - timedelta(hours=n))
        made.append(conv)
    return made


def test_scrolling_the_sidebar_loads_the_next_page_and_a_pin_moves_the_entry_on_top(page, many):
    page.goto("/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "alice-password-123")
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    entries = page.locator("#conversation-list li[id^=nav-item-]")
    expect(entries).to_have_count(50)

    page.locator(".nav-more").scroll_into_view_if_needed()

    expect(entries).to_have_count(70)
    expect(page.locator(".nav-more")).to_have_count(0)
    expect(entries.last).to_have_text("Chat number 69")

    page.goto(many[60].get_absolute_url())
    page.click("button.pin")
    expect(page.locator("button.unpin")).to_be_visible()
    expect(entries.first).to_have_text("Chat number 60")
    expect(page.locator(f"#nav-{many[60].id}")).to_have_attribute("aria-current", "page")
    expect(page.locator("#nav-heading-pinned")).to_be_visible()
