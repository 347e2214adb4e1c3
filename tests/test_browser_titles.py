"""A title a model writes after the first reply, and a title alice gives, as
she sees them in real headless Chromium: sidebar, header and browser tab."""

import pytest
from playwright.sync_api import expect

from conversations.models import Conversation
from tests.livesite import server_on_test_db

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

CHAT_MODEL = "openai:fake-normal"  # 60 tokens, 2.4 s at the browser fake's pace
LONG_MODEL = "openai:fake-normal@tokens=80"  # 3.2 s: time to rename while it streams
# The title model answers with the fake's first 14 tokens, markup included.
TITLE_MODEL = "openai:fake-normal@tokens=14"
MODEL_TITLE = "Hello, world! 你好，世界 👋🏽 🎉 <script>alert(1)</script>"

# What the page showed, recorded in the page: every document.title and every
# header text, whether the document was ever replaced, and any dialog.
WATCH = """() => {
    window.__sameDocument = true;
    window.__titles = [document.title];
    window.__headers = [document.getElementById('conversation-title').textContent.trim()];
    const note = (list, value) => { if (list[list.length - 1] !== value) list.push(value); };
    new MutationObserver(() => note(window.__titles, document.title))
        .observe(document.querySelector('title'), {childList: true, characterData: true, subtree: true});
    new MutationObserver(() => {
        const header = document.getElementById('conversation-title');
        if (header) note(window.__headers, header.textContent.trim());
    }).observe(document.querySelector('.conversation-header'), {childList: true, characterData: true, subtree: true});
}"""


@pytest.fixture(scope="module")
def titling_server(django_db_setup, django_db_blocker, browser_fake_provider):
    """The app in a daphne process of its own that has a model write titles
    (the shared chat server writes none)."""
    env = {
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "OPENAI_BASE_URL": browser_fake_provider.openai_base_url,
        "CHAT_MODELS": f"{CHAT_MODEL}=Fake GPT,{LONG_MODEL}=Fake Long,{TITLE_MODEL}=Fake Titles",
        "CHAT_TITLE_MODEL": TITLE_MODEL,
        "CHAT_PROVIDER_MAX_RETRIES": "0",
    }
    with django_db_blocker.unblock():
        server = server_on_test_db(env).start()
    yield server
    server.stop()


@pytest.fixture
def alice_page(titling_server, browser, alice):
    """A page of alice's, logged in through the login form, with any dialog recorded."""
    context = browser.new_context(base_url=titling_server.url, viewport={"width": 1100, "height": 800}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(15000)
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto("/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "alice-password-123")
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    page.alice = alice
    yield page
    context.close()


def _open_new(page, model_key: str) -> Conversation:
    conversation = Conversation.objects.create(owner=page.alice, model_key=model_key)
    page.goto(conversation.get_absolute_url())
    page.wait_for_selector('#connection[data-state="open"]', state="attached")
    page.evaluate(WATCH)
    return conversation


def _send(page, text: str) -> None:
    page.fill("#composer-text", text)
    page.press("#composer-text", "Enter")


def _title_requests(fake, question: str) -> list[dict]:
    """The title calls the fake provider got for the conversation that began with ``question``."""
    model = TITLE_MODEL.split(":", 1)[1]
    return [r.json for r in fake.requests if r.json and r.json.get("model") == model and question in str(r.json)]


def test_the_models_title_shows_in_the_sidebar_header_and_tab_without_a_reload(alice_page, browser_fake_provider):
    page = alice_page
    question = "Plans for a weekend trip to Hangzhou in spring"
    conversation = _open_new(page, CHAT_MODEL)
    nav = page.locator(f"#nav-{conversation.id}")
    # An empty conversation is not listed; its first message lists it at the top.
    expect(nav).to_have_count(0)

    _send(page, question)

    expect(page.locator("#conversation-list li[id^=nav-item-]").first).to_have_attribute(
        "id", f"nav-item-{conversation.id}"
    )

    expect(page.locator("#conversation-title")).to_have_text(MODEL_TITLE)
    expect(nav).to_have_text(MODEL_TITLE)
    page.wait_for_function("title => document.title === title", arg=MODEL_TITLE)
    assert page.locator('.msg-assistant[data-status="complete"]').count() == 1
    assert page.evaluate("window.__sameDocument") is True  # no reload: the document was never replaced
    # First the message's first line, then the model's title, never one for the other.
    assert page.evaluate("window.__titles") == ["New conversation", question, MODEL_TITLE]
    assert page.evaluate("window.__headers") == ["New conversation", question, MODEL_TITLE]
    # The model's markup is text: no element was made of it and nothing ran.
    assert page.locator("#conversation-title script, .sidebar script").count() == 0
    assert page.dialogs == []
    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_source, conversation.title_model) == (
        MODEL_TITLE,
        "model",
        TITLE_MODEL,
    )
    assert len(_title_requests(browser_fake_provider, question)) == 1


def test_a_rename_shows_at_once_and_the_title_call_after_the_reply_never_overwrites_it(
    alice_page, browser_fake_provider
):
    page = alice_page
    question = "Which museums open late in Hangzhou?"
    renamed = "Our trip 我们的旅行"
    conversation = _open_new(page, LONG_MODEL)
    nav = page.locator(f"#nav-{conversation.id}")
    _send(page, question)
    expect(page.locator("#conversation-title")).to_have_text(question)
    page.wait_for_selector('.msg-assistant[data-status="streaming"]', state="attached")

    page.click("details.rename summary")
    page.fill("#rename-title", renamed)
    with page.expect_response(lambda r: r.url.endswith("/rename/") and r.status == 200):
        page.click("details.rename button[type=submit]")

    expect(page.locator("#conversation-title")).to_have_text(renamed)
    expect(nav).to_have_text(renamed)
    page.wait_for_function("title => document.title === title", arg=renamed)
    # At once: the reply is still being written, so its title call is still to come.
    assert page.locator('.msg-assistant[data-status="streaming"]').count() == 1
    assert conversation.messages.get(role="assistant").status == "streaming"

    page.wait_for_selector('.msg-assistant[data-status="complete"]')
    # The title call starts as the reply completes and takes 0.6 s; a second
    # exchange takes 3.2 s, so by its end the title call has been answered.
    _send(page, "And which ones are free?")
    page.wait_for_function("document.querySelectorAll('.msg-assistant[data-status=\"complete\"]').length === 2")

    assert len(_title_requests(browser_fake_provider, question)) == 1  # the call was made ...
    expect(page.locator("#conversation-title")).to_have_text(renamed)  # ... and changed nothing
    expect(nav).to_have_text(renamed)
    assert page.evaluate("document.title") == renamed
    assert page.evaluate("window.__titles") == ["New conversation", question, renamed]
    assert page.evaluate("window.__headers") == ["New conversation", question, renamed]
    assert page.evaluate("window.__sameDocument") is True
    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_source, conversation.title_model) == (renamed, "user", "")


def test_a_rename_reaches_alices_other_tab_before_anything_that_follows_it(alice_page, alice):
    page = alice_page
    conversation = Conversation.objects.create(owner=alice, model_key=CHAT_MODEL, title="Before 之前")
    question = conversation.messages.create(role="user", content="Hello?")
    for answer in ("First answer", "Second answer"):
        conversation.messages.create(role="assistant", parent=question, content=answer, status="complete")
    other = page.context.new_page()
    for tab in (page, other):
        tab.goto(conversation.get_absolute_url())
        tab.wait_for_selector('#connection[data-state="open"]', state="attached")
    renamed = "After 之后"

    page.click("details.rename summary")
    page.fill("#rename-title", renamed)
    with page.expect_response(lambda r: r.url.endswith("/rename/") and r.status == 200):
        page.click("details.rename button[type=submit]")
    expect(page.locator("#conversation-title")).to_have_text(renamed)
    # A branch switch after the rename: its frame reaches the other tab after
    # anything the rename sent there.
    page.locator(".msg-assistant .sibling-prev").click()
    other.wait_for_selector('.msg-assistant .sibling-count:text("1 / 2")')

    seen = (
        other.locator("#conversation-title").inner_text(),
        other.locator(f"#nav-{conversation.id}").inner_text(),
        other.evaluate("document.title"),
    )
    other.close()
    assert seen == (renamed, renamed, renamed)
