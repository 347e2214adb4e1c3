"""Compare, as a person sees it in real headless Chromium against a live daphne
server: three models' replies growing at once, side by side, then one chosen."""

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Conversation, Message
from devtools.fakeprovider import expected_text

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

PASSWORD = "alice-password-123"
MODELS = {
    "openai:fake-normal": "Fake GPT",
    "anthropic:fake-normal": "Fake Claude",
    "openai:fake-slow-first": "Fake Slow",
}

# Every change to the columns, recorded in the page: each column's status and text length.
WATCH_COLUMNS = """() => {
    window.__columns = [];
    new MutationObserver(() => {
        const columns = [...document.querySelectorAll('.comparison-column')];
        if (columns.length !== 3) return;
        window.__columns.push(columns.map(column => {
            const bubble = column.querySelector('.msg');
            const content = bubble.querySelector('.content');
            return [bubble.dataset.status, content ? content.textContent.length : 0];
        }));
    }).observe(document.getElementById('transcript'), {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture
def alice_in(page):
    alice = get_user_model().objects.create_user("alice", password=PASSWORD)
    page.goto("/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    return alice


def _boxes(page) -> list[dict]:
    return [column.bounding_box() for column in page.locator(".comparison-column").all()]


def test_three_models_reply_side_by_side_at_once_and_one_is_chosen(page, alice_in):
    conversation = Conversation.objects.create(owner=alice_in, model_key="openai:fake-normal")
    page.goto(conversation.get_absolute_url())
    page.wait_for_selector('#connection[data-state="open"]', state="attached")
    page.evaluate(WATCH_COLUMNS)

    page.click("#compare-toggle")
    for key in MODELS:
        page.check(f'input[name=compare][value="{key}"]')
    page.fill("#composer-text", "Which of you is fastest?")
    page.press("#composer-text", "Enter")
    page.wait_for_function(
        "document.querySelectorAll('.comparison-column .msg[data-status=\"complete\"]').length === 3"
    )

    # All three grew at the same time: some moment shows them all streaming
    # with text, and a later one shows each of them longer.
    seen = page.evaluate("window.__columns")
    together = [i for i, columns in enumerate(seen) if all(s == "streaming" and n > 0 for s, n in columns)]
    assert together, seen[-5:]
    first = seen[together[0]]
    assert any(all(n > m for (_, n), (_, m) in zip(seen[j], first, strict=True)) for j in together), first

    # Each column is tagged with its model and shows its reply; each reply is saved with its model.
    columns = page.locator(".comparison-column")
    assert [columns.nth(i).get_attribute("data-model") for i in range(3)] == list(MODELS)
    assert page.locator(".comparison-column .msg-model").all_inner_texts() == list(MODELS.values())
    replies = list(Message.objects.filter(conversation=conversation, role="assistant").order_by("created_at"))
    assert [r.model_key for r in replies] == list(MODELS)
    for reply, column in zip(replies, columns.all(), strict=True):
        assert reply.status == "complete" and reply.content == expected_text(reply.model, tokens=60)
        assert column.locator(".content").inner_text().startswith(reply.content[:20])
    # The composer is back to one model.
    assert page.input_value("#composer-text") == ""
    assert not page.locator("#compare").evaluate("details => details.open")
    assert page.locator("input[name=compare]:checked").count() == 0

    # Side by side on a wide screen, stacked on a phone.
    boxes = _boxes(page)
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"] and len({round(b["y"]) for b in boxes}) == 1
    page.set_viewport_size({"width": 420, "height": 800})
    boxes = _boxes(page)
    assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"] and len({round(b["x"]) for b in boxes}) == 1
    page.set_viewport_size({"width": 1100, "height": 800})

    # Continue with the second: it is the branch, the others are its versions.
    columns.nth(1).get_by_role("button", name="Continue with this one").click()
    page.wait_for_selector(".comparison", state="detached")
    assert page.locator(".msg-assistant").count() == 1
    assert page.locator(".msg-assistant .sibling-count").inner_text() == "2 / 3"
    assert page.locator(".msg-assistant .meta-model").inner_text() == "Fake Claude"
    branch = list(Conversation.objects.get(pk=conversation.pk).transcript())
    assert branch[-1].id == replies[1].id
