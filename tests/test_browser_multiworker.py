"""Two pages of one conversation on two worker processes, in real Chromium."""

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Conversation, Message
from devtools.fakeprovider import expected_text

pytestmark = [
    pytest.mark.browser,
    pytest.mark.multiworker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(90),
]


def test_it_streams_a_message_into_both_pages_on_two_workers(browser, workers):
    a, b = workers
    alice = get_user_model().objects.create_user("alice", password="alice-password-123")
    conversation = Conversation.objects.create(owner=alice, model_key="openai:fake-normal")
    context = browser.new_context(bypass_csp=True)  # for wait_for_function (see conftest.page)
    context.set_default_timeout(20000)
    on_a, on_b = context.new_page(), context.new_page()
    on_a.goto(f"{a.url}/accounts/login/")
    on_a.fill("input[name=username]", "alice")
    on_a.fill("input[name=password]", "alice-password-123")
    on_a.click("button[type=submit]")
    on_a.wait_for_url("**/")
    for page, worker in ((on_a, a), (on_b, b)):  # the session cookie is the same host's on both ports
        page.goto(f"{worker.url}{conversation.get_absolute_url()}")
        page.wait_for_selector('#connection[data-state="open"]', state="attached")

    on_a.fill("#composer-text", "Hello from worker A")
    on_a.press("#composer-text", "Enter")
    # B sees the message and the reply growing, then the same finished reply.
    on_b.wait_for_selector(".msg-user >> text=Hello from worker A")
    on_b.wait_for_selector('.msg-assistant[data-status="streaming"]', state="attached")
    on_b.wait_for_selector('.msg-assistant[data-status="complete"]')
    on_a.wait_for_selector('.msg-assistant[data-status="complete"]')
    assert on_a.inner_text(".msg-assistant .content") == on_b.inner_text(".msg-assistant .content")
    assert Message.objects.get(conversation=conversation, role="assistant").content == expected_text(
        "fake-normal", tokens=80
    )
    context.close()
