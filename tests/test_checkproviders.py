"""``manage.py checkproviders``: one verdict line per endpoint, against live fakes and a dead port."""

import socket
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command

from conversations.providers import offered_models
from devtools.fakeprovider import SCENARIOS, FakeProvider, expected_text
from tests import fakes

clean_env = fakes.clean_env


@pytest.fixture(scope="module")
def servers():
    with FakeProvider(delay=0, api_key="key-one") as one, FakeProvider(delay=0, api_key="key-claude") as claude:
        yield one, claude


@pytest.fixture
def live(servers, clean_env, monkeypatch, settings):
    for server in servers:
        server.clear()
    cache.clear()
    monkeypatch.setenv("ONE_KEY", "key-one")
    monkeypatch.setenv("CLAUDE_KEY", "key-claude")
    settings.CHAT_PROVIDER_MAX_RETRIES = 0
    settings.CHAT_PROVIDER_CONNECT_TIMEOUT = 2.0
    yield servers
    cache.clear()


def _endpoint(kind, base_url, models=("fake-normal",), key_env=""):
    fields = {"kind": kind, "base_url": base_url, "models": models if isinstance(models, str) else list(models)}
    return {**fields, "key_env": key_env} if key_env else fields


def check(*args, skipped=False) -> tuple[list[str], CommandError | None]:
    """The verdict lines (without the built-in endpoints skipped for want of a key), and the error."""
    out = StringIO()
    error = None
    try:
        call_command("checkproviders", *args, stdout=out)
    except CommandError as exc:
        error = exc
    lines = out.getvalue().splitlines()
    return [line for line in lines if skipped or ": skipped, " not in line], error


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_live_endpoints_of_both_kinds_pass_with_their_keys_accepted(live, settings):
    one, claude = live
    settings.CHAT_ENDPOINTS = {
        "one": _endpoint("openai", one.openai_base_url, key_env="ONE_KEY"),
        "claude": _endpoint("anthropic", claude.anthropic_base_url, key_env="CLAUDE_KEY"),
    }

    lines, error = check()

    assert error is None
    assert lines[0].startswith("ok  one: openai at http://127.0.0.1:")
    assert "key ONE_KEY accepted" in lines[0] and "all configured models among them" in lines[0]
    assert lines[1].startswith("ok  claude: anthropic at") and "key CLAUDE_KEY accepted" in lines[1]
    assert [(r.method, r.path) for r in one.requests] == [("GET", "/v1/models")]
    assert "key-one" not in "".join(lines)


def test_a_dead_port_fails_and_the_exit_status_says_so(live, settings):
    one, _claude = live
    settings.CHAT_ENDPOINTS = {
        "one": _endpoint("openai", one.openai_base_url, key_env="ONE_KEY"),
        "gone": _endpoint("openai", f"http://127.0.0.1:{dead_port()}/v1"),
    }

    lines, error = check()

    assert str(error) == "1 endpoint(s) failed."
    assert lines[0].startswith("ok  one:")
    assert lines[1].startswith("FAIL  gone:") and "cannot reach the server" in lines[1]


def test_a_base_url_without_v1_or_with_a_stray_one_is_named_as_the_problem(live, settings):
    one, claude = live
    settings.CHAT_ENDPOINTS = {
        "one": _endpoint("openai", one.url, key_env="ONE_KEY"),
        "claude": _endpoint("anthropic", claude.url + "/v1", key_env="CLAUDE_KEY"),
    }

    lines, error = check()

    assert str(error) == "2 endpoint(s) failed."
    assert "check the base URL: it usually ends in /v1" in lines[0]
    assert "check the base URL: drop the /v1" in lines[1]


def test_a_refused_key_and_a_missing_one_name_their_variables(live, settings, monkeypatch):
    one, claude = live
    monkeypatch.setenv("ONE_KEY", "wrong-SECRET")
    monkeypatch.delenv("CLAUDE_KEY")
    settings.CHAT_ENDPOINTS = {
        "one": _endpoint("openai", one.openai_base_url, key_env="ONE_KEY"),
        "claude": _endpoint("anthropic", claude.anthropic_base_url, key_env="CLAUDE_KEY"),
    }

    lines, error = check()

    assert str(error) == "2 endpoint(s) failed."
    assert lines[0].startswith("FAIL  one:") and "the key was refused: check ONE_KEY" in lines[0]
    assert lines[1] == "FAIL  claude: CLAUDE_KEY is not set"
    assert "wrong-SECRET" not in "".join(lines)


def test_a_configured_model_the_server_does_not_list_fails(live, settings):
    one, _claude = live
    settings.CHAT_ENDPOINTS = {"one": _endpoint("openai", one.openai_base_url, ["fake-normal", "gpt-9"], "ONE_KEY")}

    lines, error = check()

    assert error is not None and lines[0].endswith("but not gpt-9")


def test_a_built_in_endpoint_without_its_key_is_skipped(live, settings):
    settings.CHAT_MODELS = "openai:gpt-4.1"

    lines, error = check(skipped=True)

    assert error is None and lines == ["ok  openai: skipped, OPENAI_API_KEY is not set"]


def test_complete_asks_the_first_model_for_one_token(live, settings):
    one, claude = live
    settings.CHAT_ENDPOINTS = {
        "one": _endpoint("openai", one.openai_base_url, key_env="ONE_KEY"),
        "claude": _endpoint("anthropic", claude.anthropic_base_url, key_env="CLAUDE_KEY"),
    }

    lines, error = check("--complete")

    first_token = repr(expected_text("fake-normal", max_tokens=1))
    assert error is None and all(line.endswith(f"fake-normal answered {first_token}") for line in lines)
    [post] = [r for r in one.requests if r.method == "POST"]
    assert (post.json["model"], post.json["max_tokens"]) == ("fake-normal", 1)
    [post] = [r for r in claude.requests if r.method == "POST"]
    assert (post.path, post.json["max_tokens"]) == ("/v1/messages", 1)


def test_refresh_remembers_what_discovering_endpoints_list(live, settings):
    one, _claude = live
    settings.CHAT_ENDPOINTS = {
        "one": _endpoint("openai", one.openai_base_url, "discover", "ONE_KEY"),
        "fixed": _endpoint("openai", f"http://127.0.0.1:{dead_port()}/v1"),
    }

    lines, error = check("--refresh")

    assert error is None and len(lines) == 1 and "(remembered for discovery)" in lines[0]
    assert [m.key for m in offered_models()][: len(SCENARIOS)] == [f"one:fake-{name}" for name in SCENARIOS]


def test_a_misconfigured_endpoint_is_reported_without_a_traceback(live, settings):
    settings.CHAT_ENDPOINTS = {"x": {"kind": "openai", "base_url": "localhost:11434", "models": ["m"]}}

    _lines, error = check()

    assert str(error).startswith("The endpoints are misconfigured: CHAT_ENDPOINTS, endpoint 'x': base_url")
