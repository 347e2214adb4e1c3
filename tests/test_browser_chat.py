"""What a person sees, in real headless Chromium against a live daphne server."""

from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Conversation, Message
from devtools.fakeprovider import expected_text

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

PASSWORD = "alice-password-123"
FULL_REPLY = expected_text("fake-normal", tokens=60)
LAST_REPLY = "document.querySelectorAll('.msg-assistant')[document.querySelectorAll('.msg-assistant').length - 1]"


@pytest.fixture
def alice_in(page):
    """alice, logged in through the login form."""
    alice = get_user_model().objects.create_user("alice", password=PASSWORD)
    page.goto("/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    return alice


def _open(page, alice, model_key: str) -> Conversation:
    conversation = Conversation.objects.create(owner=alice, model_key=model_key)
    page.goto(conversation.get_absolute_url())
    page.wait_for_selector('#connection[data-state="open"]', state="attached")
    return conversation


def _send(page, text: str) -> None:
    page.fill("#composer-text", text)
    page.press("#composer-text", "Enter")


def _last_reply(conversation) -> Message:
    return Message.objects.filter(conversation=conversation, role="assistant").order_by("-created_at").first()


def _wait_for_text(page, chars: int = 10) -> None:
    page.wait_for_function(f"{LAST_REPLY} && {LAST_REPLY}.querySelector('.content').textContent.length > {chars}")


def _wait_for_focus(page, element_id: str = "composer-text") -> None:
    page.wait_for_function(f"document.activeElement && document.activeElement.id === '{element_id}'")


def test_it_starts_a_chat_from_the_home_page(page, alice_in):
    page.goto("/")
    _wait_for_focus(page)
    page.select_option("#composer-model", "openai:fake-normal")
    page.keyboard.type("Hello from the home page")
    page.keyboard.press("Enter")

    page.wait_for_url("**/c/*/")
    conversation = Conversation.objects.get(owner=alice_in)
    assert page.url.endswith(conversation.get_absolute_url())
    _wait_for_focus(page)
    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    assert page.locator(".msg-user .content").inner_text() == "Hello from the home page"
    assert page.locator(".msg-assistant").count() == 1
    assert page.locator(".msg-assistant .content").inner_text().startswith(FULL_REPLY[:20])
    assert _last_reply(conversation).content == FULL_REPLY

    page.click(".new-conversation")
    page.wait_for_url(lambda url: urlsplit(url).path == "/")
    _wait_for_focus(page)
    assert Conversation.objects.filter(owner=alice_in).count() == 1


def test_sending_while_scrolled_up_scrolls_to_the_new_message(page, alice_in):
    conversation = Conversation.objects.create(owner=alice_in, model_key="demo:demo")
    parent = None
    for i in range(40):
        role = "user" if i % 2 == 0 else "assistant"
        parent = Message.objects.create(conversation=conversation, parent=parent, role=role, content=f"message {i}")
    page.goto(conversation.get_absolute_url())
    page.wait_for_selector('#connection[data-state="open"]', state="attached")
    page.evaluate("document.getElementById('transcript').scrollTop = 0")
    # Two frames: the scroll event (the reader leaves the bottom) has been handled.
    page.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")

    page.fill("#composer-text", "A question from up here")
    page.click("#send-button")

    page.wait_for_function(f"{LAST_REPLY}.dataset.status === 'complete' && {LAST_REPLY}.id !== 'msg-{parent.id}'")
    page.wait_for_function(
        "(el => el.scrollHeight - el.scrollTop - el.clientHeight < 80)(document.getElementById('transcript'))"
    )
    assert page.is_hidden("#jump-latest")
    assert page.input_value("#composer-text") == ""
    _wait_for_focus(page)


def test_it_shows_the_reply_growing_before_it_ends(page, alice_in):
    conversation = _open(page, alice_in, "openai:fake-normal")
    page.evaluate(
        """() => {
        window.__lengths = [];
        new MutationObserver(() => {
            const replies = document.querySelectorAll('.msg-assistant');
            const last = replies[replies.length - 1];
            if (last && last.dataset.status === 'streaming') {
                window.__lengths.push(last.querySelector('.content').textContent.length);
            }
        }).observe(document.getElementById('transcript'), {subtree: true, childList: true, characterData: true});
    }"""
    )
    _send(page, "Hello, 你好 👋")
    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    lengths = page.evaluate("window.__lengths")
    assert len({n for n in lengths if n > 0}) >= 3, lengths
    assert page.locator(".msg-user .content").inner_text() == "Hello, 你好 👋"
    assert _last_reply(conversation).content == FULL_REPLY
    # Model output is never markup: the fake's <script> arrives as text.
    assert page.locator(".msg-assistant script").count() == 0
    assert "<script>" in page.locator(".msg-assistant .content").inner_text()


def test_it_renders_markdown_with_a_highlighted_code_block(page, alice_in):
    _open(page, alice_in, "demo:demo")
    _send(page, "Show me a table")
    reply = page.wait_for_selector('.msg-assistant[data-status="complete"]')
    assert reply.query_selector("table th") is not None
    assert reply.query_selector(".code-block .highlight pre span") is not None  # Pygments tokens
    assert reply.query_selector(".code-header .copy-code") is not None
    assert "Show me a table" in reply.inner_text()
    assert "Demo" in reply.query_selector(".meta-model").inner_text()


def test_it_stops_a_reply(page, alice_in):
    conversation = _open(page, alice_in, "openai:fake-normal")
    _send(page, "Go")
    _wait_for_text(page)
    page.click("#stop-button")
    reply = page.wait_for_selector('.msg-assistant[data-status="stopped"]')
    assert "Stopped." in reply.inner_text()
    saved = _last_reply(conversation)
    assert saved.status == "stopped"
    assert 0 < len(saved.content) < len(FULL_REPLY)
    assert page.is_hidden("#stop-button")


def test_it_stops_a_reply_with_escape(page, alice_in):
    conversation = _open(page, alice_in, "openai:fake-normal")
    _send(page, "Go")
    _wait_for_text(page)
    page.keyboard.press("Escape")
    page.wait_for_selector('.msg-assistant[data-status="stopped"]')
    assert _last_reply(conversation).status == "stopped"


def test_it_continues_the_reply_after_a_reload(page, alice_in):
    conversation = _open(page, alice_in, "openai:fake-normal")
    _send(page, "Keep going while I reload")
    _wait_for_text(page)
    page.reload()
    page.wait_for_selector('.msg-assistant[data-status="streaming"]', state="attached")
    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    assert _last_reply(conversation).content == FULL_REPLY
    assert page.locator(".msg-assistant").count() == 1
    assert "tokens" in page.locator(".msg-assistant .msg-footer").inner_text()


def test_it_names_the_new_model_after_a_switch(page, alice_in):
    _open(page, alice_in, "openai:fake-normal")
    _send(page, "First")
    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    with page.expect_response(lambda r: r.url.endswith("/model/") and r.status == 204):
        page.select_option("#model-picker", "anthropic:fake-normal")
    _send(page, "Second")
    page.wait_for_function("document.querySelectorAll('.msg-assistant[data-status=\"complete\"]').length === 2")
    models = page.locator(".msg-assistant .meta-model").all_inner_texts()
    assert models == ["Fake GPT", "Fake Claude"]


def test_it_sends_on_enter_but_not_on_shift_enter_or_while_composing(page, alice_in):
    conversation = _open(page, alice_in, "demo:demo")
    page.fill("#composer-text", "line one")
    page.press("#composer-text", "Shift+Enter")
    page.type("#composer-text", "line two 中文")
    # An input method confirming a candidate with Enter must not send.
    page.evaluate(
        """() => document.getElementById('composer-text').dispatchEvent(
            new KeyboardEvent('keydown', {key: 'Enter', isComposing: true, bubbles: true, cancelable: true}))"""
    )
    assert page.input_value("#composer-text") == "line one\nline two 中文"
    page.press("#composer-text", "Enter")
    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    assert page.input_value("#composer-text") == ""
    users = list(Message.objects.filter(conversation=conversation, role="user").values_list("content", flat=True))
    assert users == ["line one\nline two 中文"]


def test_it_keeps_the_text_when_a_send_is_refused(page, alice_in):
    conversation = _open(page, alice_in, "openai:fake-normal")
    _send(page, "first")
    _wait_for_text(page)
    _send(page, "second, while the first streams")
    page.wait_for_selector("#composer-error:not(:empty)")
    assert "still being written" in page.inner_text("#composer-error")
    assert page.input_value("#composer-text") == "second, while the first streams"
    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    assert Message.objects.filter(conversation=conversation, role="user").count() == 1


def test_it_loads_earlier_messages_as_the_reader_scrolls_up(page, alice_in):
    conversation = Conversation.objects.create(owner=alice_in, model_key="demo:demo")
    messages, parent = [], None
    for i in range(250):
        role = "user" if i % 2 == 0 else "assistant"
        parent = Message.objects.create(conversation=conversation, parent=parent, role=role, content=f"message {i}")
        messages.append(parent)
    page.goto(conversation.get_absolute_url())
    page.wait_for_selector('#connection[data-state="open"]', state="attached")
    count = "document.querySelectorAll('#transcript .msg').length"
    assert page.evaluate(count) == 100

    page.evaluate("document.getElementById('transcript').scrollTop = 0")
    page.wait_for_function(f"{count} === 200")
    # The message the reader was at stays in view: the earlier ones arrived above it
    # (restored once htmx has settled the swap).
    page.wait_for_function(
        f"""() => {{
            const box = document.getElementById('transcript').getBoundingClientRect();
            const top = document.getElementById('msg-{messages[150].id}').getBoundingClientRect().top;
            return top >= box.top && top < box.bottom;
        }}"""
    )

    page.evaluate("document.getElementById('transcript').scrollTop = 0")
    page.wait_for_function(f"{count} === 250")
    assert page.locator("#load-earlier").count() == 0
    first = page.locator("#transcript .msg").first
    assert first.get_attribute("id") == f"msg-{messages[0].id}"


def test_edit_and_resend_makes_a_second_version_and_switching_back_restores_the_first(page, alice_in):
    _open(page, alice_in, "openai:fake-normal")
    _send(page, "first question")
    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    _send(page, "second question")
    page.wait_for_function("document.querySelectorAll('.msg-assistant[data-status=\"complete\"]').length === 2")

    first = page.locator(".msg-user").first
    first.locator("details.edit summary").click()
    # Opening an edit puts the cursor in its text.
    page.wait_for_function("document.activeElement && document.activeElement.classList.contains('edit-text')")
    first.locator(".edit-text").fill("first question, edited 改")
    first.locator(".edit-text").press("Enter")
    page.wait_for_selector('.msg-user .sibling-count:text("2 / 2")')
    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    assert page.locator(".msg").count() == 2
    assert page.locator(".msg-user .content").inner_text() == "first question, edited 改"
    assert "second question" not in page.locator("#transcript").inner_text()

    page.locator(".msg-user .sibling-prev").first.click()
    page.wait_for_selector('.msg-user .sibling-count:text("1 / 2")')
    assert page.locator(".msg").count() == 4
    assert page.locator(".msg-user .content").all_inner_texts() == ["first question", "second question"]
    assert page.locator('.msg-assistant[data-status="complete"]').count() == 2


def test_a_second_page_follows_a_branch_switch(page, alice_in):
    conversation = _open(page, alice_in, "openai:fake-normal")
    _send(page, "a question")
    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    page.locator(".msg-assistant .regenerate").click()
    page.wait_for_selector('.msg-assistant[data-status="complete"] .sibling-count:text("2 / 2")')
    other = page.context.new_page()
    other.goto(conversation.get_absolute_url())
    other.wait_for_selector('#connection[data-state="open"]', state="attached")
    assert other.locator(".msg-assistant .sibling-count").inner_text() == "2 / 2"

    page.locator(".msg-assistant .sibling-prev").click()

    other.wait_for_selector('.msg-assistant .sibling-count:text("1 / 2")')
    first = Message.objects.filter(conversation=conversation, role="assistant").order_by("created_at").first()
    assert other.locator(f"#msg-{first.id}").count() == 1
    other.close()


def test_markdown_shows_formatted_while_it_streams(page, alice_in):
    conversation = _open(page, alice_in, "openai:fake-markdown")
    page.evaluate(
        """() => {
        window.__samples = [];
        new MutationObserver(() => {
            const replies = document.querySelectorAll('.msg-assistant');
            const last = replies[replies.length - 1];
            if (!last || last.dataset.status !== 'streaming') return;
            const content = last.querySelector('.content');
            window.__samples.push({
                text: content.textContent,
                tables: content.querySelectorAll('.stream-open table tbody tr').length,
                code: content.querySelectorAll('.stream-open .code-block').length,
            });
        }).observe(document.getElementById('transcript'), {subtree: true, childList: true, characterData: true});
    }"""
    )
    _send(page, "Markdown, please")
    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    samples = page.evaluate("window.__samples")

    assert len({s["text"] for s in samples}) >= 10, samples
    for sample in samples:  # markup never shows as characters, not even on the line being written
        assert "**" not in sample["text"] and "`" not in sample["text"], sample
        assert "|" not in sample["text"] and "##" not in sample["text"], sample
    assert any(s["tables"] for s in samples), "a table is a <table> while it grows"
    assert any(s["code"] for s in samples), "an open fence is a code block while it grows"
    reply = _last_reply(conversation)
    shown = page.locator(".msg-assistant .content").evaluate(
        "el => { const copy = el.cloneNode(true); copy.querySelectorAll('.copy-code').forEach(b => b.remove());"
        " return copy.innerHTML; }"
    )
    assert shown == reply.html  # the final swap is the full render (less chat.js's copy buttons)


def test_the_thinking_section_is_open_while_thinking_and_folds_when_the_answer_starts(page, alice_in):
    conversation = _open(page, alice_in, "openai:fake-reasoning")
    page.evaluate(
        """() => {
        window.__states = [];
        new MutationObserver(() => {
            const replies = document.querySelectorAll('.msg-assistant');
            const last = replies[replies.length - 1];
            const thinking = last && last.querySelector('details.thinking');
            if (!thinking || last.dataset.status !== 'streaming') return;
            window.__states.push({
                open: thinking.open,
                reasoning: thinking.querySelector('.thinking-body').textContent.length,
                answer: last.querySelector('.content').textContent.trim().length,
                summary: thinking.querySelector('summary').textContent,
            });
        }).observe(document.getElementById('transcript'), {subtree: true, childList: true, characterData: true});
    }"""
    )
    _send(page, "Think first")
    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    states = page.evaluate("window.__states")

    thinking = [s for s in states if s["reasoning"] and not s["answer"]]
    answering = [s for s in states if s["answer"]]
    assert thinking and all(s["open"] and s["summary"] == "Thinking" for s in thinking), states
    assert answering and not any(s["open"] for s in answering), states
    assert all(s["summary"].startswith("Thought for") for s in answering), states
    reply = _last_reply(conversation)
    assert reply.reasoning_ms is not None
    summary = page.locator(".msg-assistant details.thinking summary").inner_text()
    assert summary in ("Thought for 1 second", f"Thought for {reply.thought_seconds} seconds")
    assert not page.locator(".msg-assistant details.thinking").evaluate("el => el.open")


@pytest.fixture
def strict_page(chat_server, browser):
    """A page that keeps the site's Content-Security-Policy (``page`` bypasses it for Playwright's helpers)."""
    context = browser.new_context(base_url=chat_server.url)
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    context.close()


def test_the_page_works_under_its_content_security_policy_which_blocks_an_injected_inline_script(strict_page):
    page = strict_page
    refused = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    alice = get_user_model().objects.create_user("alice", password=PASSWORD)
    response = page.goto("/accounts/login/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "style-src 'self'" in policy
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")

    _open(page, alice, "openai:fake-normal")  # htmx and the websocket, under the policy
    _send(page, "hello under the policy 你好")
    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    assert "hello under the policy 你好" in page.locator(".msg-user .content").inner_text()
    assert refused == []  # nothing of ours is refused

    ran = page.evaluate(
        """() => new Promise(resolve => {
            document.addEventListener("securitypolicyviolation", () => resolve(window.injected === true), {once: true});
            const script = document.createElement("script");
            script.textContent = "window.injected = true";
            document.body.appendChild(script);
        })"""
    )
    assert ran is False


def test_a_temporary_chat_from_the_home_page_streams_survives_a_reload_and_leaves_no_row(page, alice_in):
    page.goto("/")
    _wait_for_focus(page)
    page.select_option("#composer-model", "openai:fake-normal")
    page.fill("#composer-text", "临时 chat, keep nothing")
    page.click("#send-temporary")

    page.wait_for_url("**/t/*/")
    assert "Nothing of this chat is saved" in page.locator("#temporary-notice").inner_text()
    page.wait_for_selector('#connection[data-state="open"]', state="attached")
    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    assert page.locator(".msg-assistant .content").inner_text().startswith(FULL_REPLY[:20])

    page.reload()  # the chat lives in the server's memory: the reload finds it
    page.wait_for_selector('#connection[data-state="open"]', state="attached")
    assert page.locator(".msg-user .content").inner_text() == "临时 chat, keep nothing"
    _send(page, "and again")
    page.wait_for_function("document.querySelectorAll('.msg-assistant[data-status=\"complete\"]').length === 2")
    assert page.locator(".conversation-list a").count() == 0  # never in the sidebar
    assert not Conversation.objects.exists() and not Message.objects.exists()
