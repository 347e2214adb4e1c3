import pytest
from django.urls import reverse

from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db


def _urls(conversation, message_id):
    cid = conversation.id
    return [
        ("get", reverse("conversation", args=[cid])),
        ("post", reverse("rename", args=[cid])),
        ("post", reverse("set_model", args=[cid])),
        ("post", reverse("update_settings", args=[cid])),
        ("get", reverse("delete", args=[cid])),
        ("post", reverse("delete", args=[cid])),
        ("post", reverse("send", args=[cid])),
        ("post", reverse("stop", args=[cid])),
        ("post", reverse("retry", args=[cid, message_id])),
        ("post", reverse("continue", args=[cid, message_id])),
    ]


def test_it_checks_ownership_on_every_url(charlie_client, conversation, reply):
    for method, url in _urls(conversation, reply.id):
        response = getattr(charlie_client, method)(url, {"title": "x", "text": "hi", "model": "demo:demo"})
        assert response.status_code == 404, (method, url)
    conversation.refresh_from_db()
    assert conversation.title == "Alice's plans"
    assert conversation.messages.count() == 2


def test_it_shows_the_transcript_escaped_and_rendered(alice_client, conversation, reply):
    Message.objects.create(conversation=conversation, parent=reply, role="user", content="<script>alert(1)</script>")
    response = alice_client.get(conversation.get_absolute_url())
    body = response.content.decode()
    assert response.status_code == 200
    assert "<strong>there</strong>" in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert(1)" not in body


def test_it_lists_only_my_conversations_newest_first(alice_client, alice, charlie):
    older = Conversation.objects.create(owner=alice, title="Older")
    newer = Conversation.objects.create(owner=alice, title="Newer")
    secret = Conversation.objects.create(owner=charlie, title="Charlie's secret")
    for conversation in (older, newer, secret):
        Message.objects.create(conversation=conversation, role="user", content="Hi")
    older.touch()  # activity moves it to the top
    body = alice_client.get(reverse("index")).content.decode()
    assert "Charlie&#x27;s secret" not in body and "Charlie's secret" not in body
    assert body.index("Older") < body.index("Newer")
    assert newer.get_absolute_url() in body


@pytest.mark.django_db(transaction=True)  # the view is async
def test_it_renames(alice_client, conversation):
    response = alice_client.post(reverse("rename", args=[conversation.id]), {"title": "  Trip to 北京  "})
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.title == "Trip to 北京"


@pytest.mark.django_db(transaction=True)  # the view is async
def test_it_renames_with_htmx(alice_client, conversation):
    response = alice_client.post(
        reverse("rename", args=[conversation.id]), {"title": "New"}, headers={"HX-Request": "true"}
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert 'id="conversation-title"' in body and "New" in body
    assert "<html" not in body


def test_it_asks_before_deleting(alice_client, conversation):
    response = alice_client.get(reverse("delete", args=[conversation.id]))
    assert response.status_code == 200
    assert "cannot be undone" in response.content.decode()
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_it_deletes(alice_client, conversation, reply):
    response = alice_client.post(reverse("delete", args=[conversation.id]))
    assert response.status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(pk=reply.pk).exists()


def test_it_switches_the_model(alice_client, conversation, settings, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    settings.CHAT_MODELS = "openai:gpt-4.1-mini"
    settings.CHAT_DEMO_MODEL = "1"
    url = reverse("set_model", args=[conversation.id])
    response = alice_client.post(url, {"model": "openai:gpt-4.1-mini"}, headers={"HX-Request": "true"})
    assert response.status_code == 204
    conversation.refresh_from_db()
    assert conversation.model_key == "openai:gpt-4.1-mini"


def test_it_refuses_a_model_that_is_not_offered(alice_client, conversation):
    url = reverse("set_model", args=[conversation.id])
    response = alice_client.post(url, {"model": "openai:gpt-4.1-mini"}, headers={"HX-Request": "true"})
    assert response.status_code == 400
    conversation.refresh_from_db()
    assert conversation.model_key == "demo:demo"


def test_it_saves_conversation_settings(alice_client, conversation):
    url = reverse("update_settings", args=[conversation.id])
    alice_client.post(url, {"system_prompt": "Be brief.", "temperature": "0.3", "max_tokens": "256"})
    conversation.refresh_from_db()
    assert (conversation.system_prompt, conversation.temperature, conversation.max_tokens) == ("Be brief.", 0.3, 256)


def test_it_rejects_an_out_of_range_temperature(alice_client, conversation):
    url = reverse("update_settings", args=[conversation.id])
    alice_client.post(url, {"system_prompt": "", "temperature": "7", "max_tokens": ""})
    conversation.refresh_from_db()
    assert conversation.temperature is None


def test_a_system_prompt_over_the_limit_is_refused_and_the_old_one_kept(alice_client, conversation, settings):
    settings.CHAT_MAX_SYSTEM_PROMPT_CHARS = 100
    conversation.system_prompt = "Be brief."
    conversation.save()
    url = reverse("update_settings", args=[conversation.id])
    response = alice_client.post(url, {"system_prompt": "长" * 101, "temperature": "", "max_tokens": ""}, follow=True)
    conversation.refresh_from_db()
    assert conversation.system_prompt == "Be brief."
    assert "too long (101 characters; the limit is 100)" in response.content.decode()


def test_max_tokens_are_capped_per_model(alice_client, conversation, settings):
    settings.CHAT_MAX_TOKENS_LIMIT = 1000
    url = reverse("update_settings", args=[conversation.id])
    response = alice_client.post(url, {"system_prompt": "", "temperature": "", "max_tokens": "200000"}, follow=True)
    conversation.refresh_from_db()
    assert conversation.max_tokens is None
    assert "between 1 and 1000 for this model" in response.content.decode()
    settings.CHAT_MODEL_OPTIONS = {"demo:demo": {"max_tokens_limit": 300000}}
    alice_client.post(url, {"system_prompt": "", "temperature": "", "max_tokens": "200000"})
    conversation.refresh_from_db()
    assert conversation.max_tokens == 200000


def test_it_follows_the_newest_branch(conversation):
    question = Message.objects.create(conversation=conversation, role="user", content="Q")
    Message.objects.create(
        conversation=conversation, parent=question, role="assistant", content="failed", status="error"
    )
    retried = Message.objects.create(conversation=conversation, parent=question, role="assistant", content="A")
    follow_up = Message.objects.create(conversation=conversation, parent=retried, role="user", content="Q2")
    assert [m.content for m in conversation.transcript()] == ["Q", "A", "Q2"]
    assert conversation.transcript()[-1] == follow_up


def test_it_tells_users_that_reviewers_may_read(alice_client, conversation):
    body = alice_client.get(conversation.get_absolute_url()).content.decode()
    assert "Staff with review permission may read conversations." in body


def test_it_shows_the_html_a_reply_was_stored_with(alice_client, conversation, reply):
    from conversations.markdown import RENDER_VERSION

    stored = "<p>stored <strong>render</strong></p>"  # the cache is used as is
    Message.objects.filter(pk=reply.pk).update(html=stored, html_version=RENDER_VERSION)
    assert stored in alice_client.get(conversation.get_absolute_url()).content.decode()


def test_it_renders_anew_a_reply_stored_by_an_older_renderer(alice_client, conversation, reply):
    from conversations.markdown import RENDER_VERSION

    Message.objects.filter(pk=reply.pk).update(html="<p>stale</p>", html_version=RENDER_VERSION - 1)
    page = alice_client.get(conversation.get_absolute_url()).content.decode()
    assert "stale" not in page and "Hi <strong>there</strong>" in page


def _long_conversation(owner, count: int) -> tuple[Conversation, list[Message]]:
    conversation = Conversation.objects.create(owner=owner, title="long", model_key="demo:demo")
    messages, parent = [], None
    for i in range(count):
        role = "user" if i % 2 == 0 else "assistant"
        parent = Message.objects.create(conversation=conversation, parent=parent, role=role, content=f"message {i}")
        messages.append(parent)
    return conversation, messages


def _bubbles(html: str) -> list[str]:
    import re

    return re.findall(r'<article class="msg msg-\w+ status-\w+" id="msg-([0-9a-f-]+)"', html)


def test_it_shows_the_newest_messages_and_a_way_to_earlier_ones(alice, alice_client, settings):
    settings.CHAT_PAGE_MESSAGES = 100
    conversation, messages = _long_conversation(alice, 250)

    page = alice_client.get(conversation.get_absolute_url()).content.decode()

    assert _bubbles(page) == [str(m.id) for m in messages[150:]]
    assert f'hx-get="/c/{conversation.id}/earlier/?before={messages[150].id}"' in page
    assert 'href="?all=1"' in page  # without JavaScript: the whole conversation


def test_it_loads_earlier_messages_in_windows(alice, alice_client, settings):
    settings.CHAT_PAGE_MESSAGES = 100
    conversation, messages = _long_conversation(alice, 250)
    url = reverse("earlier", args=[conversation.id])

    middle = alice_client.get(url, {"before": messages[150].id}, headers={"HX-Request": "true"}).content.decode()
    first = alice_client.get(url, {"before": messages[50].id}, headers={"HX-Request": "true"}).content.decode()

    assert _bubbles(middle) == [str(m.id) for m in messages[50:150]]
    assert f"before={messages[50].id}" in middle
    assert _bubbles(first) == [str(m.id) for m in messages[:50]]
    assert "load-earlier" not in first


def test_it_shows_the_whole_conversation_without_javascript(alice, alice_client, settings):
    settings.CHAT_PAGE_MESSAGES = 100
    conversation, messages = _long_conversation(alice, 250)
    url = reverse("earlier", args=[conversation.id])

    everything = alice_client.get(conversation.get_absolute_url(), {"all": "1"}).content.decode()
    redirected = alice_client.get(url, {"before": messages[150].id})

    assert _bubbles(everything) == [str(m.id) for m in messages]
    assert "load-earlier" not in everything
    assert redirected.status_code == 302
    assert redirected["Location"] == f"{conversation.get_absolute_url()}?all=1#msg-{messages[150].id}"


def test_it_checks_ownership_of_earlier_messages(alice, charlie_client):
    conversation, messages = _long_conversation(alice, 3)
    url = reverse("earlier", args=[conversation.id])
    assert charlie_client.get(url, {"before": messages[2].id}, headers={"HX-Request": "true"}).status_code == 404


def test_it_answers_404_for_an_unknown_earlier_anchor(alice, alice_client):
    conversation, _ = _long_conversation(alice, 3)
    url = reverse("earlier", args=[conversation.id])
    assert alice_client.get(url, {"before": "not-a-uuid"}).status_code == 404
    assert alice_client.get(url, {"before": conversation.id}).status_code == 404


def test_it_renders_a_long_conversation_with_constant_queries(alice, alice_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for size in (4, 1000):
        conversation, _ = _long_conversation(alice, size)
        alice_client.get(conversation.get_absolute_url())
        with CaptureQueriesContext(connection) as captured:
            assert alice_client.get(conversation.get_absolute_url()).status_code == 200
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1]


def _stopped_reply(conversation, parent, content):
    return Message.objects.create(
        conversation=conversation, parent=parent, role="assistant", content=content, status="stopped"
    )


def test_only_the_last_stopped_reply_offers_continue(alice_client, conversation):
    first = Message.objects.create(conversation=conversation, role="user", content="Q1")
    older = _stopped_reply(conversation, first, "cut short")
    second = Message.objects.create(conversation=conversation, parent=older, role="user", content="Q2")
    newest = _stopped_reply(conversation, second, "cut short again")

    body = alice_client.get(reverse("conversation", args=[conversation.id])).content.decode()

    assert reverse("continue", args=[conversation.id, newest.id]) in body
    assert reverse("continue", args=[conversation.id, older.id]) not in body
    assert reverse("retry", args=[conversation.id, older.id]) in body  # it can still be retried


def test_the_footer_says_how_a_reply_ended_in_words(alice_client, conversation):
    question = Message.objects.create(conversation=conversation, role="user", content="Q")
    cut = Message.objects.create(
        conversation=conversation, parent=question, role="assistant", content="partial", finish_reason="length"
    )
    Message.objects.create(
        conversation=conversation,
        parent=cut,
        role="assistant",
        content="",
        status="error",
        error="Boom",
        finish_reason="content_filter",
    )

    body = alice_client.get(reverse("conversation", args=[conversation.id])).content.decode()

    assert "Cut off at the length limit" in body and "Blocked by the provider&#x27;s filter" in body
    assert ">length<" not in body and ">content_filter<" not in body


def test_an_empty_error_reply_has_no_rating_or_copy_button(alice_client, conversation):
    question = Message.objects.create(conversation=conversation, role="user", content="Q")
    failed = Message.objects.create(
        conversation=conversation, parent=question, role="assistant", content="", status="error", error="Boom"
    )

    body = alice_client.get(reverse("conversation", args=[conversation.id])).content.decode()

    assert f'id="msg-{failed.id}-feedback"' not in body
    assert f'data-copy="#msg-{failed.id}-content"' not in body
    assert reverse("retry", args=[conversation.id, failed.id]) in body


def test_a_reply_that_arrived_in_one_piece_shows_no_tokens_per_second():
    streamed = Message(role="assistant", output_tokens=100, duration_ms=2000, first_token_ms=500)
    whole = Message(
        role="assistant", output_tokens=100, duration_ms=2000, first_token_ms=1990, parameters={"streaming": False}
    )
    assert streamed.tokens_per_second == pytest.approx(66.7, abs=0.1)
    assert whole.tokens_per_second is None


def test_the_model_picker_groups_models_by_provider(alice_client, conversation, settings, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
    settings.CHAT_MODELS = "openai:same-name=Same,anthropic:same-name=Same"
    settings.CHAT_DEMO_MODEL = "1"

    body = alice_client.get(reverse("conversation", args=[conversation.id])).content.decode()

    picker = body[body.index('id="model-picker"') : body.index("</select>", body.index('id="model-picker"'))]
    assert picker.count("<optgroup") == 3
    assert picker.index('label="OpenAI-compatible"') < picker.index('value="openai:same-name"')
    assert picker.index('label="Anthropic"') < picker.index('value="anthropic:same-name"')
    assert '<option value="demo:demo" selected>' in picker


def _composer_focused(client, conversation) -> bool:
    body = client.get(conversation.get_absolute_url()).content.decode()
    textarea = body[body.index('<textarea name="text" id="composer-text"') :]
    return "autofocus" in textarea[: textarea.index(">")]


def test_the_composer_is_focused_on_a_new_chat_but_not_on_a_longer_one(alice, alice_client, conversation, reply):
    assert _composer_focused(alice_client, Conversation.objects.create(owner=alice, model_key="demo:demo"))
    assert _composer_focused(alice_client, conversation)  # its first exchange, as the home page leaves it
    long, _messages = _long_conversation(alice, 4)
    assert not _composer_focused(alice_client, long)


def test_conversation_pages_and_fragments_are_private_and_never_stored(alice_client, conversation, reply):
    pages = [
        reverse("index"),
        conversation.get_absolute_url(),
        reverse("earlier", args=[conversation.id]) + f"?before={reply.id}",
    ]
    for url in pages:
        response = alice_client.get(url, **({"HTTP_HX_REQUEST": "true"} if "earlier" in url else {}))
        assert response.status_code == 200, url
        directives = {d.strip() for d in response["Cache-Control"].split(",")}
        assert {"private", "no-store"} <= directives, url


@pytest.mark.django_db(transaction=True)
async def test_deleting_a_conversation_stops_its_reply_first(alice, conversation, settings):
    import asyncio

    from django.test import AsyncClient

    from conversations import generation

    settings.CHAT_DEMO_MODEL = "1"
    settings.CHAT_DEMO_TOKEN_DELAY_MS = 200  # still being written when the deletion comes
    client = AsyncClient()
    await client.aforce_login(alice)
    await client.post(reverse("send", args=[conversation.id]), {"text": "a long one"})
    running = generation.get_active(conversation.id)
    assert running is not None

    response = await client.post(reverse("delete", args=[conversation.id]))
    assert response.status_code == 302
    await asyncio.wait_for(running.done.wait(), 10)
    assert running.message.status == "stopped"
    assert not await Message.objects.filter(conversation_id=conversation.id).aexists()
