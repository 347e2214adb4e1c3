"""Shared fixtures: alice owns things, charlie has no access to them."""

import os
import threading

import pytest
from django.db.backends import utils as db_utils
from django.test import Client

from conversations.models import Conversation, Message
from tests.fakes import PROVIDER_ENV

# The same for the servers tests start as child processes.
os.environ["CHAT_TITLE_MODEL"] = "off"


def pytest_collection_modifyitems(config, items):
    """Tests that restart PostgreSQL or Redis run last (in their order): the
    session's long-lived servers (browser, two workers) then never live
    through a restart they were not written for.  (One that did failed its
    next two operations, a send and a handshake, before it recovered.)"""
    items.sort(key=lambda item: item.get_closest_marker("restarts_services") is not None)


@pytest.fixture(autouse=True)
def _isolated_provider_env(monkeypatch, settings):
    """No test sees the machine's real provider keys, and the demo is instant."""
    for name in PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)
    settings.CHAT_MODELS = ""
    settings.CHAT_ENDPOINTS = ""
    settings.CHAT_ENDPOINTS_FILE = ""
    settings.CHAT_DEMO_MODEL = ""
    settings.CHAT_DEMO_TOKEN_DELAY_MS = 0
    # No title calls unless a test asks: one would outlive the test's reply.
    settings.CHAT_TITLE_MODEL = "off"


@pytest.fixture(scope="session", autouse=True)
def _close_database_thread_connections(django_db_setup):
    """Close the connections channels' database thread and the writer thread
    opened on the test database, so that PostgreSQL lets pytest-django drop it at the end."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    # Thread-sensitive sync_to_async calls from async tests ran on this thread.
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)
    # Checkpoints, final writes and the sweep ran on the writer thread.
    from conversations import db

    db.close_writer_connections()


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """A new channel layer instance per test: channels-redis keeps receive
    state on the instance, bound to the event loop that first received, and
    every async test runs on a loop of its own."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-password-123")


@pytest.fixture
def charlie(django_user_model):
    return django_user_model.objects.create_user("charlie", password="charlie-password-123")


@pytest.fixture
def alice_client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def charlie_client(charlie) -> Client:
    client = Client()
    client.force_login(charlie)
    return client


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(owner=alice, title="Alice's plans", model_key="demo:demo")


@pytest.fixture
def reply(conversation) -> Message:
    """A finished exchange in alice's conversation; returns the assistant reply."""
    question = Message.objects.create(conversation=conversation, role="user", content="Hello?")
    return Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content="Hi **there**",
        provider="demo",
        model="demo",
        status="complete",
        finish_reason="stop",
        input_tokens=3,
        output_tokens=2,
    )


@pytest.fixture(scope="session")
def fake_provider():
    """One fake provider server for the whole run (both wire formats)."""
    from devtools.fakeprovider import FakeProvider

    with FakeProvider(tokens=20, delay=0.002) as server:
        yield server


@pytest.fixture
async def openai_fake(fake_provider, monkeypatch, settings):
    """Route the openai SDK to the fake provider and offer its scenario models.

    Returns a function that points ``conversation`` at a scenario model. The
    SDK clients the test's loop built are closed after it (their pooled
    connections belong to that loop)."""
    from conversations.providers import anthropic as anthropic_provider
    from conversations.providers import openai as openai_provider

    fake_provider.clear()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_provider.openai_base_url)
    settings.CHAT_PROVIDER_MAX_RETRIES = 0
    models = []

    def use(conversation, model: str) -> str:
        models.append(f"openai:{model}")
        settings.CHAT_MODELS = ",".join(models)
        Conversation.objects.filter(pk=conversation.pk).update(model_key=f"openai:{model}")
        return f"openai:{model}"

    yield use
    await openai_provider.clients.aclose()
    await anthropic_provider.clients.aclose()


@pytest.fixture(scope="module")
def browser(django_db_setup):
    """Debian's headless Chromium driven by Playwright (never a downloaded browser).

    Playwright's sync API keeps an asyncio loop marked as running in this
    thread, which trips Django's async-safety guard although the ORM calls in
    browser tests are plain synchronous ones; the guard is relaxed only while
    a browser is up (module scope, so no other test module runs under it)."""
    from tests.livesite import CHROMIUM, CHROMIUM_ARGS, chromium_missing

    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture(scope="session")
def browser_fake_provider():
    """A slower fake provider, so that a person (and a test) can watch a reply grow."""
    from devtools.fakeprovider import FakeProvider

    with FakeProvider(tokens=60, delay=0.04) as server:
        yield server


@pytest.fixture(scope="session")
def chat_server(django_db_setup, django_db_blocker, browser_fake_provider):
    """The app in a real daphne process, on the test database, with the fake
    provider's models and the demo model offered."""
    from tests.livesite import server_on_test_db

    env = {
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "OPENAI_BASE_URL": browser_fake_provider.openai_base_url,
        "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key",
        "ANTHROPIC_BASE_URL": browser_fake_provider.anthropic_base_url,
        "CHAT_MODELS": "openai:fake-normal=Fake GPT,anthropic:fake-normal=Fake Claude,openai:fake-slow-first=Fake Slow,"
        "openai:fake-markdown=Fake Markdown,openai:fake-reasoning=Fake Reasoning",
        "CHAT_DEMO_MODEL": "1",
        "CHAT_DEMO_TOKEN_DELAY_MS": "5",
        "CHAT_PROVIDER_MAX_RETRIES": "0",
    }
    with django_db_blocker.unblock():
        server = server_on_test_db(env).start()
    yield server
    server.stop()


@pytest.fixture
def page(chat_server, browser):
    # Playwright's wait_for_function evaluates its string in the page, which the
    # site's CSP forbids; test_browser_chat has the one test that runs under the policy.
    context = browser.new_context(base_url=chat_server.url, viewport={"width": 1100, "height": 800}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    context.close()


# The API tests' server (tests/test_api*.py): fast replies, and a slow model to join in the middle of.
API_TOKENS = 40
SLOW = "fake-normal@delay=0.05"  # 2 s


@pytest.fixture(scope="session")
def api_fake():
    from devtools.fakeprovider import FakeProvider

    with FakeProvider(tokens=API_TOKENS, delay=0.01) as server:
        yield server


@pytest.fixture(scope="session")
def api_server(django_db_setup, django_db_blocker, api_fake):
    env = {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": api_fake.openai_base_url,
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": api_fake.anthropic_base_url,
        "CHAT_MODELS": f"openai:fake-normal=Fake GPT,anthropic:fake-normal=Fake Claude,openai:{SLOW},"
        "openai:fake-error-500=Broken,openai:fake-reasoning",
        "CHAT_PROVIDER_MAX_RETRIES": "0",
    }
    from tests.livesite import server_on_test_db

    with django_db_blocker.unblock():
        server = server_on_test_db(env).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def multi_fake():
    """A fake provider for the two-worker tests (a reply takes about 2.4 s)."""
    from devtools.fakeprovider import FakeProvider

    with FakeProvider(tokens=80, delay=0.03) as server:
        yield server


@pytest.fixture(scope="session")
def workers(django_db_setup, django_db_blocker, multi_fake):
    """Two real worker processes on the test database and Redis."""
    from django.conf import settings

    from tests.livesite import two_workers

    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL is unset: workers cannot share a channel layer")
    env = {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": multi_fake.openai_base_url,
        "CHAT_MODELS": "openai:fake-normal",
        "CHAT_PROVIDER_MAX_RETRIES": "0",
        "REDIS_URL": settings.REDIS_URL,
    }
    with two_workers(env, django_db_blocker) as workers:
        yield workers


class SqlWrites:
    """Every INSERT/UPDATE/DELETE Django runs, from any thread (the generation
    saves from channels' database thread, which CaptureQueriesContext misses)."""

    def __init__(self):
        self.statements: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, execute, sql, params, many, context):
        if sql.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            with self._lock:
                self.statements.append(sql)
        return execute(sql, params, many, context)


@pytest.fixture
def sql_writes(monkeypatch):
    recorder = SqlWrites()
    original = db_utils.CursorWrapper._execute_with_wrappers

    def wrapped(self, sql, params, many, executor):
        return original(self, sql, params, many, lambda *a: recorder(executor, *a))

    monkeypatch.setattr(db_utils.CursorWrapper, "_execute_with_wrappers", wrapped)
    return recorder
