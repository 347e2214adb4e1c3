"""Taking conversations out (Markdown, JSON, JSON Lines) and bringing them in
(this app's JSON, ChatGPT's and Claude's data exports): branches, dates and
models kept, nothing half-imported, nothing imported twice, no model called."""

import io
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from conversations.models import Conversation, Flag, Message, UsageDay

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).parent / "fixtures" / "imports"


def _upload(client, content: bytes, name="conversations.json"):
    return client.post(reverse("import_conversations"), {"file": SimpleUploadedFile(name, content)})


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _branch(conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conversation.transcript()]


@pytest.fixture
def branched(alice, settings) -> Conversation:
    """Alice's conversation with a regenerated reply: two branches, the newer shown."""
    conv = Conversation.objects.create(
        owner=alice, title="Branches 分支", model_key="openai:gpt-4.1-mini", system_prompt="Be terse."
    )
    q = Message.objects.create(conversation=conv, role="user", content="Question 问题 👋🏽")
    for n, text in enumerate(["first answer", "second answer **bold**"]):
        Message.objects.create(
            conversation=conv,
            parent=q,
            role="assistant",
            content=text,
            provider="openai",
            model=f"gpt-4.1-mini-{n}",
            status="complete",
            input_tokens=10 + n,
            output_tokens=20 + n,
            created_at=datetime(2026, 11, 1, 12, n, tzinfo=UTC),
        )
    return conv


def test_a_chatgpt_export_imports_with_its_branches_dates_and_models(alice, alice_client):
    response = _upload(alice_client, _fixture("chatgpt_conversations.json"))
    assert response.status_code == 302
    first = Conversation.objects.get(owner=alice, title="Python 列表推导")
    assert first.imported_from == "chatgpt" and first.source_id == "6726f0a1-1111-8000-9a7b-1c2d3e4f5a6b"
    assert first.created_at == datetime.fromtimestamp(1730538000.123456, tz=UTC)
    shown = _branch(first)
    assert shown[0] == ("user", "How do I square a list in Python? 列表推导怎么写？")
    assert shown[1][1].startswith("列表推导：") and "平方完成 ✅" in shown[1][1]
    assert shown[3] == (
        "assistant",
        "```\nprint([x ** 2 for x in [1, 2, 3]])\n```",
    )  # a code call, the tool's output skipped
    assert shown[-1] == ("assistant", "The result is `[1, 4, 9]`.")
    replies = first.messages.filter(role="assistant")
    assert {(m.provider, m.model) for m in replies} == {("chatgpt", "gpt-4o"), ("chatgpt", "gpt-4o-mini")}
    old = replies.get(model="gpt-4o")
    assert old.parent.content.startswith("How do I square") and old.parent.children.count() == 2  # the branch is kept
    assert "I am a teacher" not in "".join(m.content for m in first.messages.all())  # hidden context stays out

    second = Conversation.objects.get(owner=alice, title="Trip ideas")
    assert second.system_prompt == "You are a travel planner. Be concise."
    trip = _branch(second)
    assert trip[0][1] == "[Content of type “image_asset_pointer” was not imported.]\n\nWhere is this? Kyoto or Nara?"
    assert trip[1] == ("assistant", "[Content of type “tether_browsing_display” was not imported.]")
    assert trip[2] == ("assistant", "It looks like Fushimi Inari in **Kyoto** (京都).")  # the empty reply skipped
    assert not UsageDay.objects.exists()  # no model was called
    page = alice_client.get(first.get_absolute_url()).content.decode()
    assert 'id="imported-from"' in page and "Imported from ChatGPT" in page


def test_a_claude_export_imports_with_thinking_attachments_and_the_shown_branch(alice, alice_client):
    assert _upload(alice_client, _fixture("claude_conversations.json")).status_code == 302
    tokyo = Conversation.objects.get(owner=alice, imported_from="claude", title="東京の天気")
    shown = tokyo.transcript()
    assert [m.role for m in shown] == ["user", "assistant", "user", "assistant"]
    assert shown[1].reasoning == "The user asks about Tokyo weather in November."
    assert "折りたたみ傘" in shown[1].content and "[Content of type “tool_use” was not imported.]" in shown[1].content
    assert shown[2].content.startswith("**itinerary.txt**") and "Day 2: Hakone" in shown[2].content
    assert shown[1].model == "claude" and shown[1].provider == "claude"
    assert tokyo.updated_at == datetime(2024, 11, 5, 9, 20, tzinfo=UTC)

    regex = Conversation.objects.get(owner=alice, title="Regex help")
    question, answer = regex.transcript()
    assert answer.content.startswith("A stricter one") and question.children.count() == 2
    assert "<script>" not in answer.content_html() and "&lt;script&gt;" in answer.content_html()


def test_a_zip_of_the_export_imports_its_conversations_json(alice, alice_client):
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("chat.html", "<html></html>")
        archive.writestr("conversations.json", _fixture("chatgpt_conversations.json"))
    assert _upload(alice_client, packed.getvalue(), "export.zip").status_code == 302
    assert Conversation.objects.filter(owner=alice, imported_from="chatgpt").count() == 2


def test_importing_the_same_export_again_duplicates_nothing(alice, alice_client):
    _upload(alice_client, _fixture("chatgpt_conversations.json"))
    count = Message.objects.count()
    response = _upload(alice_client, _fixture("chatgpt_conversations.json"))
    assert "0 conversations imported. 2 were here already and were skipped." in _followed(alice_client, response)
    assert Message.objects.count() == count and Conversation.objects.count() == 2


def _followed(client, response) -> str:
    return client.get(response["Location"]).content.decode()


def test_export_delete_import_gives_back_the_same_conversation(alice, alice_client, branched):
    Flag.objects.create(conversation=branched, reason="other", note="a reviewer's note")
    exported = alice_client.get(reverse("conversation_export", args=[branched.id, "json"]))
    document = json.loads(b"".join(exported.streaming_content))
    assert (document["format"], document["version"]) == ("chatsite.conversation", 1)
    assert "flags" not in document and "owner" not in document  # the staff's, not the user's
    before = _comparable(branched)
    branched.delete()

    assert _upload(alice_client, json.dumps(document).encode(), "c.json").status_code == 302
    again = Conversation.objects.get(owner=alice)
    assert again.imported_from == "chatsite" and again.source_id == str(document["id"])
    assert _comparable(again) == before


def _comparable(conversation) -> dict:
    messages = sorted(conversation.messages.all(), key=lambda m: (m.created_at, m.content))
    return {
        "title": conversation.title,
        "system_prompt": conversation.system_prompt,
        "model_key": conversation.model_key,
        "created_at": conversation.created_at,
        "shown": _branch(conversation),
        "messages": [
            (
                m.role,
                m.content,
                m.provider,
                m.model,
                m.status,
                m.input_tokens,
                m.output_tokens,
                m.created_at,
                m.parent.content if m.parent_id else None,
            )
            for m in messages
        ],
    }


def test_importing_an_export_of_a_conversation_still_here_skips_it(alice_client, branched):
    exported = alice_client.get(reverse("conversation_export", args=[branched.id, "json"]))
    _upload(alice_client, b"".join(exported.streaming_content), "c.json")
    assert Conversation.objects.count() == 1


def test_every_conversation_as_json_lines_round_trips(alice, alice_client, branched, reply):
    lines = b"".join(alice_client.get(reverse("account_export_lines")).streaming_content).decode().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["messages"] for line in lines)
    Conversation.objects.all().delete()
    assert _upload(alice_client, "\n".join(lines).encode(), "all.jsonl").status_code == 302
    assert Conversation.objects.filter(owner=alice).count() == 2 and Message.objects.count() == 5


def test_the_account_download_reimports(alice, alice_client, branched):
    document = b"".join(alice_client.get(reverse("account_export")).streaming_content)
    assert json.loads(document)["format"] == "chatsite.account"
    branched.delete()
    assert _upload(alice_client, document, "account.json").status_code == 302
    assert Conversation.objects.get(owner=alice).title == "Branches 分支"


def test_charlies_export_imported_by_alice_becomes_alices_own_copy(alice, charlie, charlie_client, alice_client):
    theirs = Conversation.objects.create(owner=charlie, title="charlie's")
    Message.objects.create(conversation=theirs, role="user", content="hi")
    document = b"".join(charlie_client.get(reverse("conversation_export", args=[theirs.id, "json"])).streaming_content)
    assert _upload(alice_client, document, "c.json").status_code == 302
    copy = Conversation.objects.get(owner=alice)
    assert copy.pk != theirs.pk and Conversation.objects.get(pk=theirs.pk).owner == charlie


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"not json at all", "That file is not JSON."),
        (b'{"format": "chatsite.conversation", "version": 99, "messages": []}', "newer version of this app"),
        (b'[{"hello": "world"}]', "not an export this app knows"),
        (b"[]", "holds no conversations"),
        ("[" * 100_000, "nested too deeply"),
        (b"\xff\xfe\x00garbage", "not UTF-8 text"),
    ],
)
def test_a_file_that_is_not_an_export_gets_a_clear_error_and_imports_nothing(alice_client, content, error):
    response = _upload(alice_client, content.encode() if isinstance(content, str) else content)
    assert response.status_code == 400 and error in response.content.decode()
    assert not Conversation.objects.exists()


def test_one_bad_conversation_in_a_file_imports_none_of_it(alice_client):
    conversations = json.loads(_fixture("claude_conversations.json"))
    conversations[1]["chat_messages"][0]["sender"] = "robot"
    response = _upload(alice_client, json.dumps(conversations).encode())
    assert response.status_code == 400 and "no valid sender" in response.content.decode()
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_a_file_over_the_size_limit_is_refused(alice_client, settings):
    settings.CHAT_IMPORT_MAX_MB = 0
    response = _upload(alice_client, _fixture("claude_conversations.json"))
    assert response.status_code == 400 and "larger than 0 MB" in response.content.decode()


def test_a_zip_whose_conversations_json_inflates_past_the_limit_is_refused_unread(alice_client, settings):
    settings.CHAT_IMPORT_MAX_MB = 1
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversations.json", b" " * (3 * 1024 * 1024))
    response = _upload(alice_client, packed.getvalue(), "bomb.zip")
    assert response.status_code == 400 and "larger than 1 MB" in response.content.decode()


def test_the_markdown_export_has_the_branch_shown_with_models_and_times(alice_client, branched):
    response = alice_client.get(reverse("conversation_export", args=[branched.id, "md"]))
    text = b"".join(response.streaming_content).decode()
    assert response["Content-Type"].startswith("text/markdown") and "attachment" in response["Content-Disposition"]
    assert text.startswith("# Branches 分支\n")
    assert "## You · " in text and "Question 问题 👋🏽" in text
    assert "## Assistant · openai:gpt-4.1-mini-1 · 2026-11-01 12:01" in text and "second answer **bold**" in text
    assert "first answer" not in text  # another branch


def test_another_users_conversation_cannot_be_exported(charlie_client, branched):
    for fmt in ("md", "json"):
        assert charlie_client.get(reverse("conversation_export", args=[branched.id, fmt])).status_code == 404
    assert charlie_client.get(reverse("conversation_export", args=[branched.id, "exe"])).status_code == 404


def test_the_settings_page_offers_the_import_form(alice_client):
    body = alice_client.get(reverse("account_settings")).content.decode()
    assert 'enctype="multipart/form-data"' in body and reverse("import_conversations") in body
