"""A reviewer reads a transcript in the admin, and an owner rates a reply, in real headless Chromium."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from conversations.models import AuditLog, Conversation, Feedback, Message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]


def _log_in(page, url: str, username: str, password: str) -> None:
    page.goto(url)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("[type=submit]")


@pytest.fixture
def reply():
    alice = get_user_model().objects.create_user("alice", password="alice-password-123")
    conversation = Conversation.objects.create(owner=alice, title="Trip", model_key="openai:fake-normal")
    question = Message.objects.create(conversation=conversation, role="user", content="Where to?")
    return Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content="Go to **Lisbon** <script>window.__pwned = true</script>",
        provider="openai",
        model="fake-normal",
        parameters={"temperature": 0.7},
        status="complete",
        finish_reason="stop",
        input_tokens=12,
        output_tokens=34,
        first_token_ms=250,
        duration_ms=1800,
    )


def test_a_reviewer_reads_the_rendered_reply_with_its_provenance(page, reply):
    rita = get_user_model().objects.create_user("rita", password="rita-password-123", is_staff=True)
    rita.user_permissions.add(*Permission.objects.filter(codename__in=["view_conversation", "review_conversation"]))
    _log_in(page, "/admin/login/?next=/admin/conversations/conversation/", "rita", "rita-password-123")
    page.wait_for_url("**/admin/conversations/conversation/")
    page.get_by_role("link", name="Review").click()
    page.wait_for_url(f"**/{reply.conversation_id}/review/")

    bubble = page.locator(f"#msg-{reply.id}")
    assert bubble.locator(".content strong").inner_text() == "Lisbon"
    assert page.evaluate("window.__pwned === undefined")
    assert bubble.locator(".prov-provider").inner_text() == "openai"
    assert bubble.locator(".prov-model").inner_text() == "fake-normal"
    assert bubble.locator(".prov-tokens").inner_text() == "12 / 34"
    assert bubble.locator(".prov-ttft").inner_text() == "250"
    assert bubble.locator(".prov-duration").inner_text() == "1800"
    assert bubble.locator(".prov-finish").inner_text() == "stop"
    assert bubble.locator(".prov-parameters").inner_text() == "temperature=0.7"
    assert page.locator(".review-msg.msg-user .content").inner_text() == "Where to?"
    entry = AuditLog.objects.get()
    assert (entry.actor_username, entry.action, entry.conversation_ids) == (
        "rita",
        "view",
        [str(reply.conversation_id)],
    )


def test_a_superuser_exports_conversations_from_the_live_server(page, reply, tmp_path):
    # Under daphne the export streams from an async iterator.
    get_user_model().objects.create_superuser("root", password="root-password-123")
    _log_in(page, "/admin/login/?next=/admin/conversations/conversation/", "root", "root-password-123")
    page.wait_for_url("**/admin/conversations/conversation/")
    page.check(f'input[name=_selected_action][value="{reply.conversation_id}"]')
    page.select_option("select[name=action]", "export_jsonl")
    with page.expect_download() as download:
        page.click("button[name=index]")
    path = tmp_path / "export.jsonl"
    download.value.save_as(path)
    (line,) = path.read_text().splitlines()
    exported = json.loads(line)
    assert exported["id"] == str(reply.conversation_id)
    assert [m["content"] for m in exported["messages"]] == ["Where to?", reply.content]
    assert AuditLog.objects.get().action == "export"


def test_the_owner_rates_a_reply_with_htmx(page, reply):
    _log_in(page, "/accounts/login/", "alice", "alice-password-123")
    page.wait_for_url("**/")
    page.goto(reply.conversation.get_absolute_url())
    page.wait_for_selector('#connection[data-state="open"]', state="attached")
    page.evaluate("window.__marker = 1")  # a full page load (no htmx) would lose it
    page.click(f"#msg-{reply.id}-feedback summary")
    page.fill(f"#msg-{reply.id}-comment", "good pick")
    page.click(f"#msg-{reply.id}-feedback .rate-up")
    page.wait_for_selector(f'#msg-{reply.id}-feedback .rate-up[aria-pressed="true"]')
    assert page.evaluate("window.__marker") == 1
    feedback = Feedback.objects.get()
    assert (feedback.rating, feedback.comment) == ("up", "good pick")

    page.click(f"#msg-{reply.id}-feedback .rate-up")  # pressing it again takes the rating back
    page.wait_for_selector(f'#msg-{reply.id}-feedback .rate-up[aria-pressed="false"]')
    assert not Feedback.objects.exists()


def test_the_rating_survives_the_websocket_redrawing_the_last_reply(page, reply):
    # On connect the server sends the newest reply again (it may have changed
    # since the page was rendered); it must carry the owner's rating.
    Feedback.objects.create(message=reply, user=reply.conversation.owner, rating="down", comment="too vague")
    _log_in(page, "/accounts/login/", "alice", "alice-password-123")
    page.wait_for_url("**/")
    page.add_init_script(
        "new MutationObserver(records => { for (const r of records) for (const n of r.removedNodes)"
        f" if (n.id === 'msg-{reply.id}') window.__redrawn = true; }})"
        ".observe(document, {childList: true, subtree: true});"
    )
    fetches = []
    page.on("request", lambda r: fetches.append(r.url) if "/feedback/" in r.url else None)
    page.goto(reply.conversation.get_absolute_url())
    page.wait_for_function("window.__redrawn === true")
    assert page.locator(f"#msg-{reply.id}-feedback .rate-down").get_attribute("aria-pressed") == "true"
    assert page.locator(f"#msg-{reply.id}-comment").input_value() == "too vague"
    assert fetches == []  # the redrawn bubble knew the rating: no request to ask for it
