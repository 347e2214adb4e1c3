"""Reviewing conversations in the admin: who may read what, what is audited,
and that the pages stay at a constant number of queries.

alice owns the conversation; rita is staff with the review permission; sam is
staff who may view conversations but not read them; root is a superuser."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from conversations import export, stats, usage
from conversations.models import AuditLog, Conversation, Feedback, Flag, Message, Transcript

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:conversations_conversation_changelist")
STATS = reverse("admin:conversations_conversation_stats")
SECRET = "my secret diagnosis"


def _staff(django_user_model, name: str, *codenames: str):
    user = django_user_model.objects.create_user(name, password=f"{name}-password-123", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="conversations", codename__in=codenames)
    )
    return user


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def rita(django_user_model):
    return _staff(django_user_model, "rita", "view_conversation", "review_conversation", "view_flag", "change_flag")


@pytest.fixture
def sam(django_user_model):
    return _staff(django_user_model, "sam", "view_conversation", "delete_conversation", "view_flag")


@pytest.fixture
def rita_client(rita) -> Client:
    return _client(rita)


@pytest.fixture
def sam_client(sam) -> Client:
    return _client(sam)


@pytest.fixture
def root_client(django_user_model) -> Client:
    return _client(django_user_model.objects.create_superuser("root", password="root-password-123"))


@pytest.fixture
def secret(conversation, reply) -> Conversation:
    """alice's conversation, with content in the title, system prompt, messages and feedback."""
    conversation.title = SECRET
    conversation.system_prompt = f"prompt about {SECRET}"
    conversation.save()
    Message.objects.filter(pk=reply.parent_id).update(content=f"Tell me about {SECRET}")
    Message.objects.filter(pk=reply.pk).update(
        content=f"About **{SECRET}**",
        reasoning=f"thinking about {SECRET}",
        parameters={"temperature": 0.3},
        first_token_ms=120,
        duration_ms=900,
    )
    Feedback.objects.create(message=reply, user=conversation.owner, rating="down", comment=f"wrong {SECRET}")
    return conversation


def _review_url(conversation) -> str:
    return reverse("admin:conversations_conversation_review", args=[conversation.pk])


def _body(response) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


# --- Staff without the review permission see no content ------------------------


def test_it_hides_titles_and_content_from_the_list_without_review_permission(sam_client, secret):
    body = _body(sam_client.get(CHANGELIST))
    assert str(secret.pk)[:8] in body
    assert "alice" in body
    assert "secret" not in body


def test_it_searches_owners_but_not_content_without_review_permission(sam_client, secret):
    assert str(secret.pk)[:8] not in _body(sam_client.get(CHANGELIST, {"q": "diagnosis"}))
    assert str(secret.pk)[:8] in _body(sam_client.get(CHANGELIST, {"q": "alice"}))
    assert not AuditLog.objects.exists()


@pytest.mark.parametrize(
    "lookup", ["title__icontains", "system_prompt__icontains", "messages__content__icontains", "title"]
)
def test_it_refuses_lookups_on_content_without_review_permission(sam_client, secret, lookup):
    response = sam_client.get(CHANGELIST, {lookup: "diagnosis"})
    assert response.status_code in (302, 400)  # the admin drops (?e=1) or refuses a disallowed lookup
    assert "secret" not in _body(response)


def test_it_shows_no_content_on_the_change_page_without_review_permission(sam_client, secret):
    response = sam_client.get(reverse("admin:conversations_conversation_change", args=[secret.pk]))
    body = _body(response)
    assert response.status_code == 200
    assert "secret" not in body
    assert "demo" in body  # provenance is metadata
    assert _review_url(secret) not in body


def test_it_refuses_the_review_page_without_review_permission(sam_client, secret):
    assert sam_client.get(_review_url(secret)).status_code == 403
    assert not AuditLog.objects.exists()


def test_it_refuses_the_history_page_without_review_permission(sam_client, secret):
    assert sam_client.get(reverse("admin:conversations_conversation_history", args=[secret.pk])).status_code == 403


def test_it_refuses_export_without_review_permission(sam_client, secret):
    body = _body(sam_client.get(CHANGELIST))
    assert "export_jsonl" not in body
    response = sam_client.post(CHANGELIST, {"action": "export_jsonl", "_selected_action": [str(secret.pk)]})
    assert not response.streaming
    assert "secret" not in _body(response)
    assert not AuditLog.objects.exists()


def test_it_refuses_deletion_without_review_permission(sam_client, secret):
    # The confirmation page would list every message's text.
    response = sam_client.get(reverse("admin:conversations_conversation_delete", args=[secret.pk]))
    assert response.status_code == 403
    assert "delete_selected" not in _body(sam_client.get(CHANGELIST))


def test_it_refuses_flagging_without_review_permission(sam_client, secret, reply):
    url = reverse("admin:conversations_conversation_flag", args=[secret.pk])
    assert sam_client.post(url, {"reason": "wrong", "message": str(reply.pk)}).status_code == 403
    assert not Flag.objects.exists()


def test_it_shows_stats_as_aggregates_only(sam_client, secret):
    body = _body(sam_client.get(STATS))
    assert "demo:demo" in body
    assert "secret" not in body
    assert "alice" not in body


def test_it_refuses_stats_to_staff_who_may_not_view_conversations(django_user_model, secret):
    nobody = _client(_staff(django_user_model, "nora"))
    assert nobody.get(STATS).status_code == 403
    assert nobody.get(CHANGELIST).status_code == 403


def test_it_hides_flag_notes_without_review_permission(sam_client, secret, rita):
    Flag.objects.create(conversation=secret, reviewer=rita, reason="privacy", note=f"mentions {SECRET}")
    body = _body(sam_client.get(reverse("admin:conversations_flag_changelist")))
    assert "Personal data" in body
    assert "secret" not in body
    assert "secret" not in _body(sam_client.get(reverse("admin:conversations_conversation_change", args=[secret.pk])))


# --- Reviewers read transcripts, and every read is audited ---------------------


def test_it_shows_the_transcript_with_provenance(rita_client, rita, secret, reply):
    response = rita_client.get(_review_url(secret))
    body = _body(response)
    assert response.status_code == 200
    assert f"About <strong>{SECRET}</strong>" in body
    assert f"Tell me about {SECRET}" in body
    assert f"thinking about {SECRET}" in body
    assert f"prompt about {SECRET}" in body
    assert "temperature=0.3" in body
    for provenance in ("demo", "3 / 2", "120", "900", "stop"):
        assert provenance in body
    assert f"wrong {SECRET}" in body  # alice's feedback
    entry = AuditLog.objects.get()
    assert (entry.actor, entry.actor_username, entry.action) == (rita, "rita", "view")
    assert entry.conversation_ids == [str(secret.pk)]


def test_it_sanitises_replies_on_the_review_page(rita_client, conversation, reply):
    Message.objects.filter(pk=reply.pk).update(content='<script>alert(1)</script><img src=x onerror="alert(2)">')
    Message.objects.filter(pk=reply.parent_id).update(content="<b>user</b>")
    body = _body(rita_client.get(_review_url(conversation)))
    assert "<script>alert(1)" not in body
    assert "<img" not in body.split('id="review-transcript"')[1]
    assert "&lt;b&gt;user&lt;/b&gt;" in body


def test_it_shows_the_error_text_of_a_failed_reply(rita_client, conversation, reply):
    Message.objects.filter(pk=reply.pk).update(
        status="error", error="Rate limited by provider", error_kind="rate_limit"
    )
    body = _body(rita_client.get(_review_url(conversation)))
    assert "Rate limited by provider" in body
    assert "rate_limit" in body


def test_it_shows_and_exports_the_providers_own_words_escaped(rita_client, conversation, reply):
    Message.objects.filter(pk=reply.pk).update(
        status="error", error="The model provider rejected the request.", error_detail="Bad <b>model</b> name"
    )
    body = _body(rita_client.get(_review_url(conversation)))
    assert '<p class="msg-error-detail">The provider said: <q>Bad &lt;b&gt;model&lt;/b&gt; name</q></p>' in body

    response = rita_client.post(CHANGELIST, {"action": "export_jsonl", "_selected_action": [str(conversation.pk)]})
    _question, answer = json.loads(_body(response))["messages"]
    assert answer["error_detail"] == "Bad <b>model</b> name"


def test_it_shows_every_branch_once_and_marks_the_retried_reply(rita_client, conversation, reply):
    Message.objects.filter(pk=reply.pk).update(status="error", content="first attempt")
    Message.objects.create(
        conversation=conversation, parent_id=reply.parent_id, role="assistant", content="second attempt"
    )
    body = _body(rita_client.get(_review_url(conversation)))
    assert body.count("first attempt") == 1
    assert body.count("second attempt") == 1
    assert body.index("first attempt") < body.index("second attempt")
    assert body.count("superseded by a retry") == 1
    assert "attempt 1 of 2" in body and "attempt 2 of 2" in body


def test_the_review_page_draws_each_message_with_the_chats_bubble(rita_client, conversation, reply):
    body = _body(rita_client.get(_review_url(conversation)))

    # What conversations/_message.html emits, in the reviewer's mode: no owner controls.
    assert f'<div class="content markdown" id="msg-{reply.id}-content">' in body
    assert f'id="msg-{reply.id}-thinking"' in body
    assert f'id="msg-{reply.id}-feedback"' not in body and "Regenerate" not in body
    assert "<style" not in body and "css/review.css" in body


def test_the_review_bubble_offers_none_of_the_owners_controls(rita_client, conversation, reply):
    Message.objects.filter(pk=reply.pk).update(status="stopped")  # the owner would get Retry and Continue
    body = _body(rita_client.get(_review_url(conversation)))

    assert "Stopped." in body
    for name in ("retry", "continue", "regenerate"):
        assert reverse(name, args=[conversation.id, reply.id]) not in body
    assert reverse("edit_message", args=[conversation.id, reply.parent_id]) not in body
    assert "data-copy" not in body and "ws-send" not in body


def test_it_indents_every_fork_however_deep(rita_client, conversation):
    parent = None
    for depth in range(8):  # two children at each level: each fork indents once more
        parent, _sibling = (
            Message.objects.create(conversation=conversation, parent=parent, role="user", content=f"q{depth}")
            for _ in range(2)
        )
    body = _body(rita_client.get(_review_url(conversation)))

    for depth in range(8):
        assert body.count(f'data-depth="{depth}"') == 2  # indented by review.css (no inline style under the CSP)


def test_it_gives_superusers_the_review_permission(root_client, secret):
    assert root_client.get(_review_url(secret)).status_code == 200
    assert SECRET in _body(root_client.get(CHANGELIST))
    assert AuditLog.objects.get().actor_username == "root"


def test_it_audits_content_searches(rita_client, secret):
    body = _body(rita_client.get(CHANGELIST, {"q": "diagnosis"}))
    assert str(secret.pk)[:8] in body
    entry = AuditLog.objects.get()
    assert entry.action == "search"
    assert entry.details == {"query": "diagnosis"}
    assert entry.conversation_ids == [str(secret.pk)]


def test_it_exports_json_lines_and_audits_the_export(rita_client, secret, reply, alice):
    other = Conversation.objects.create(owner=alice, title="Other")
    Flag.objects.create(conversation=secret, message=reply, reason="wrong", note="check")
    response = rita_client.post(
        CHANGELIST, {"action": "export_jsonl", "_selected_action": [str(secret.pk), str(other.pk)]}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/jsonl")
    assert "attachment" in response["Content-Disposition"]
    lines = [json.loads(line) for line in _body(response).splitlines()]
    assert {line["id"] for line in lines} == {str(secret.pk), str(other.pk)}
    exported = next(line for line in lines if line["id"] == str(secret.pk))
    assert exported["owner"] == "alice"
    assert exported["system_prompt"] == f"prompt about {SECRET}"
    assert exported["flags"][0]["reason"] == "wrong"
    question, answer = exported["messages"]
    assert question["role"] == "user" and question["parent"] is None
    assert answer["parent"] == question["id"]
    assert answer["content"] == f"About **{SECRET}**"
    assert answer["first_token_ms"] == 120 and answer["parameters"] == {"temperature": 0.3}
    assert answer["feedback"] == [
        {"rating": "down", "comment": f"wrong {SECRET}", "updated_at": answer["feedback"][0]["updated_at"]}
    ]
    entry = AuditLog.objects.get()
    assert entry.action == "export"
    assert sorted(entry.conversation_ids) == sorted([str(secret.pk), str(other.pk)])


def test_it_audits_the_delete_confirmation_which_lists_messages(rita_client, rita, secret):
    rita.user_permissions.add(Permission.objects.get(codename="delete_conversation"))
    response = rita_client.get(reverse("admin:conversations_conversation_delete", args=[secret.pk]))
    assert SECRET in _body(response)
    entry = AuditLog.objects.get()
    assert (entry.action, entry.conversation_ids, entry.details) == (
        "view",
        [str(secret.pk)],
        {"page": "delete confirmation"},
    )


@pytest.mark.django_db(transaction=True)
async def test_it_streams_the_same_lines_to_asgi_servers(alice, monkeypatch):
    from asgiref.sync import sync_to_async

    monkeypatch.setattr(export, "EXPORT_BATCH", 2)  # two batches

    def make():
        ids = [Conversation.objects.create(owner=alice, title=f"t{i}").pk for i in range(3)]
        Message.objects.create(conversation_id=ids[0], role="user", content="hello")
        return ids, list(export.export_lines(ids))

    ids, expected = await sync_to_async(make)()
    streamed = [line async for line in export.aexport_lines(ids)]
    assert streamed == expected
    assert len(streamed) == 3


# --- The audit log: superusers only, never edited ------------------------------


def test_it_shows_the_audit_log_to_superusers_only(root_client, rita_client, rita, secret):
    entry = AuditLog.record(rita, "view", [secret.pk])
    changelist = reverse("admin:conversations_auditlog_changelist")
    body = _body(root_client.get(changelist))
    assert "rita" in body and str(secret.pk)[:8] in body
    assert rita_client.get(changelist).status_code == 403
    assert root_client.get(reverse("admin:conversations_auditlog_add")).status_code == 403
    assert root_client.get(reverse("admin:conversations_auditlog_delete", args=[entry.pk])).status_code == 403
    change = root_client.post(reverse("admin:conversations_auditlog_change", args=[entry.pk]), {"action": "export"})
    assert change.status_code == 403
    entry.refresh_from_db()
    assert entry.action == "view"


# --- Flags and filters ---------------------------------------------------------


def test_it_flags_a_reply_from_the_review_page(rita_client, rita, conversation, reply):
    url = reverse("admin:conversations_conversation_flag", args=[conversation.pk])
    response = rita_client.post(url, {"reason": "harmful", "note": "unsafe advice", "message": str(reply.pk)})
    assert response.status_code == 302
    assert response["Location"].endswith(f"#msg-{reply.pk}")
    flag = Flag.objects.get()
    assert (flag.conversation, flag.message, flag.reviewer, flag.reason) == (conversation, reply, rita, "harmful")
    rita_client.post(url, {"reason": "other", "message": ""})
    assert Flag.objects.filter(message=None, conversation=conversation).count() == 1


def test_it_resolves_a_flag_in_the_flag_admin(rita_client, rita, conversation, reply):
    flag = Flag.objects.create(conversation=conversation, message=reply, reviewer=rita, reason="bug")
    url = reverse("admin:conversations_flag_change", args=[flag.pk])
    response = rita_client.post(url, {"note": "fixed in the provider", "resolved": "on"})
    assert response.status_code == 302
    flag.refresh_from_db()
    assert (flag.resolved, flag.note, flag.reason, flag.message) == (True, "fixed in the provider", "bug", reply)
    assert _listed_flags(rita_client, resolved__exact=1) == 1
    assert _listed_flags(rita_client, resolved__exact=0) == 0


def _listed_flags(client, **params) -> int:
    body = _body(client.get(reverse("admin:conversations_flag_changelist"), params))
    return body.count('class="field-conversation_link"')


def test_it_refuses_to_flag_a_reply_of_another_conversation(rita_client, conversation, reply, alice):
    other = Conversation.objects.create(owner=alice)
    url = reverse("admin:conversations_conversation_flag", args=[other.pk])
    assert rita_client.post(url, {"reason": "wrong", "message": str(reply.pk)}).status_code == 404
    assert not Flag.objects.exists()


def _listed(client, **params) -> set[str]:
    body = _body(client.get(CHANGELIST, params))
    return {c for c in ("aaa", "bbb", "ccc") if f">{c} title<" in body}


@pytest.fixture
def three(alice, charlie):
    """aaa errored on demo and is flagged; bbb got thumbs up on openai; ccc is charlie's and empty."""
    a = Conversation.objects.create(owner=alice, title="aaa title")
    b = Conversation.objects.create(owner=alice, title="bbb title")
    Conversation.objects.create(owner=charlie, title="ccc title")
    Message.objects.create(conversation=a, role="assistant", status="error", provider="demo", model="demo")
    ok = Message.objects.create(conversation=b, role="assistant", provider="openai", model="gpt-x", input_tokens=10)
    Message.objects.create(conversation=b, role="assistant", status="stopped", provider="openai", model="gpt-x")
    Feedback.objects.create(message=ok, user=alice, rating="up")
    Flag.objects.create(conversation=a, reason="bug")
    Flag.objects.create(conversation=b, reason="bug", resolved=True)
    return a, b


def test_it_filters_by_status_feedback_flag_model_and_owner(rita_client, three, alice):
    assert _listed(rita_client) == {"aaa", "bbb", "ccc"}
    assert _listed(rita_client, status="error") == {"aaa"}
    assert _listed(rita_client, status="stopped") == {"bbb"}
    assert _listed(rita_client, status="clean") == {"ccc"}
    assert _listed(rita_client, feedback="up") == {"bbb"}
    assert _listed(rita_client, feedback="none") == {"aaa", "ccc"}
    assert _listed(rita_client, flag="open") == {"aaa"}
    assert _listed(rita_client, flag="any") == {"aaa", "bbb"}
    assert _listed(rita_client, flag="none") == {"ccc"}
    assert _listed(rita_client, model="openai:gpt-x") == {"bbb"}
    assert _listed(rita_client, owner__id__exact=alice.pk) == {"aaa", "bbb"}


def test_it_lists_models_tokens_status_and_feedback(rita_client, three):
    body = _body(rita_client.get(CHANGELIST, {"model": "openai:gpt-x"}))
    assert "openai:gpt-x" in body
    assert "1 stopped" in body
    assert "👍 1 · 👎 0" in body
    assert "0 open of 1" in body


def test_it_shows_cost_only_for_models_with_a_price_in_the_catalog(rita_client, three, settings):
    Message.objects.filter(model="gpt-x", input_tokens=10).update(input_tokens=2_000_000, output_tokens=1_000_000)
    assert "2.4000" not in _body(rita_client.get(CHANGELIST))  # gpt-x has no price: blank, not zero
    settings.CHAT_MODEL_OPTIONS = json.dumps({"openai:gpt-x": {"price_in": 0.40, "price_out": 1.60}})
    body = _body(rita_client.get(CHANGELIST))
    assert "Cost (USD)" in body
    assert "2.4000" in body  # 2M in at 0.40 + 1M out at 1.60


def test_it_computes_cost_and_leaves_it_blank_for_unpriced_models(settings):
    settings.CHAT_MODEL_OPTIONS = json.dumps({"a:x": {"price_in": 1, "price_out": 2}})
    prices = usage.model_prices()
    assert prices["anthropic:claude-haiku-4-5"] == (1, 5)  # built-in, whether its key is set or not
    assert str(usage.cost([("a:x", 1_000_000, 500_000)], prices)) == "2"
    assert usage.cost([("a:x", 1, 1), ("b:y", 5, 5)], prices) is None
    assert usage.cost([("b:y", 0, 0)], prices) == 0


# --- Stats ---------------------------------------------------------------------


def test_it_computes_replies_tokens_error_rate_and_ttft_per_model_and_day(conversation):
    now = timezone.now()
    for i, ttft in enumerate([100, 200, 300, 400, 1000]):
        Message.objects.create(
            conversation=conversation,
            role="assistant",
            provider="demo",
            model="demo",
            status="error" if i == 0 else "complete",
            input_tokens=10,
            output_tokens=5,
            first_token_ms=ttft,
            created_at=now,
        )
    Message.objects.create(
        conversation=conversation, role="assistant", provider="demo", model="demo", status="streaming"
    )
    Message.objects.create(
        conversation=conversation, role="assistant", provider="demo", model="demo", created_at=now - timedelta(days=40)
    )
    result = stats.reply_stats(30)
    (total,) = result["totals"]
    assert (total.model_key, total.replies, total.errors, total.tokens_in, total.tokens_out) == (
        "demo:demo",
        5,
        1,
        50,
        25,
    )
    assert total.error_rate == 0.2
    assert total.ttft_mean == 400
    assert total.ttft_p95 == 1000
    (day,) = result["rows"]
    assert day.replies == 5 and day.ttft_p95 == 1000


def test_it_uses_nearest_rank_percentiles():
    assert stats.percentile([], 95) is None
    assert stats.percentile(list(range(1, 101)), 95) == 95
    assert stats.percentile([7], 95) == 7


def test_it_orders_the_tree_and_marks_the_current_branch(conversation):
    t0 = timezone.now()
    q = Message.objects.create(conversation=conversation, role="user", created_at=t0)
    a1 = Message.objects.create(
        conversation=conversation, parent=q, role="assistant", created_at=t0 + timedelta(seconds=1)
    )
    a2 = Message.objects.create(
        conversation=conversation, parent=q, role="assistant", created_at=t0 + timedelta(seconds=2)
    )
    q2 = Message.objects.create(conversation=conversation, parent=a2, role="user", created_at=t0 + timedelta(seconds=3))
    nodes = Transcript(conversation.messages.all()).tree()
    assert [n.message.pk for n in nodes] == [q.pk, a1.pk, a2.pk, q2.pk]
    assert [n.current for n in nodes] == [True, False, True, True]
    assert [n.superseded for n in nodes] == [False, True, False, False]
    assert [m.pk for m in conversation.transcript()] == [n.message.pk for n in nodes if n.current]


# --- Constant queries ----------------------------------------------------------


def _queries(client, url, **params) -> int:
    client.get(url, params)  # warm caches (content types, permissions) so only the page's own queries count
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url, params).status_code == 200
    return len(ctx.captured_queries)


def _conversations(owner, n: int) -> None:
    conversations = Conversation.objects.bulk_create(Conversation(owner=owner, title=f"c{i}") for i in range(n))
    messages = Message.objects.bulk_create(
        Message(conversation=c, role="assistant", provider="demo", model=f"m{i % 3}", input_tokens=1, output_tokens=2)
        for i, c in enumerate(conversations)
    )
    Feedback.objects.bulk_create(Feedback(message=m, user=owner, rating="up") for m in messages[::2])
    Flag.objects.bulk_create(Flag(conversation=c, reason="bug") for c in conversations[::3])


@pytest.mark.parametrize("who", ["rita", "sam"])
def test_it_lists_1000_conversations_in_as_many_queries_as_3(request, alice, who):
    client = request.getfixturevalue(f"{who}_client")
    _conversations(alice, 3)
    few = _queries(client, CHANGELIST)
    _conversations(alice, 997)
    assert _queries(client, CHANGELIST) == few
    assert _queries(client, CHANGELIST, q="c1") == _queries(client, CHANGELIST, q="c12")


def _messages(conversation, n: int) -> None:
    start, chain, parent = timezone.now(), [], None
    for i in range(n):  # a chain, so the tree is as deep as it is long (UUIDs are set on creation)
        parent = Message(
            conversation=conversation,
            parent=parent,
            role="assistant" if i % 2 else "user",
            content=f"**m{i}**",
            provider="demo",
            model="demo",
            created_at=start + timedelta(milliseconds=i),
        )
        chain.append(parent)
    Message.objects.bulk_create(chain)
    Feedback.objects.bulk_create(
        Feedback(message=m, user=conversation.owner, rating="down")
        for m in conversation.messages.filter(role="assistant")[:50]
    )


def test_it_reviews_1000_messages_in_as_many_queries_as_2(rita_client, alice):
    small, big = Conversation.objects.create(owner=alice), Conversation.objects.create(owner=alice)
    _messages(small, 2)
    _messages(big, 1000)
    few = _queries(rita_client, _review_url(small))
    many = _queries(rita_client, _review_url(big))
    assert many == few
    assert _queries(rita_client, reverse("admin:conversations_conversation_change", args=[big.pk])) == _queries(
        rita_client, reverse("admin:conversations_conversation_change", args=[small.pk])
    )


def test_it_audits_deleting_a_user_whose_conversations_the_page_lists(root_client, alice, secret):
    response = root_client.get(reverse("admin:auth_user_delete", args=[alice.pk]))
    assert SECRET in _body(response)  # Django lists every related object, messages included
    entry = AuditLog.objects.get()
    assert (entry.actor_username, entry.action, entry.conversation_ids, entry.details) == (
        "root",
        "view",
        [str(secret.pk)],
        {"page": "user delete confirmation"},
    )


def test_staff_who_may_delete_users_but_not_review_see_no_content_there(django_user_model, alice, secret):
    from django.contrib.auth.models import Permission as AuthPermission

    hank = django_user_model.objects.create_user("hank", password="hank-password-123", is_staff=True)
    hank.user_permissions.add(*AuthPermission.objects.filter(codename__in=["view_user", "delete_user"]))
    response = _client(hank).get(reverse("admin:auth_user_delete", args=[alice.pk]))
    assert response.status_code == 200
    assert SECRET not in _body(response) and "About" not in _body(response)
    assert not AuditLog.objects.exists()
