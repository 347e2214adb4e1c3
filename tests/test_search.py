"""Search over the titles and message text of one's own conversations: on
whichever database the suite runs on (SQLite's FTS5 trigram table, or
PostgreSQL's pg_trgm indexes), with the short-query fallback."""

from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from conversations import search as search_module
from conversations.models import Conversation, Message
from conversations.search import search, snippet

pytestmark = pytest.mark.django_db


def _conversation(owner, *texts, title="", minutes_ago=0) -> tuple[Conversation, list[Message]]:
    """A chain of messages (user, assistant, user, …)."""
    when = timezone.now() - timedelta(minutes=minutes_ago)
    conv = Conversation.objects.create(owner=owner, title=title, updated_at=when)
    messages, parent = [], None
    for number, text in enumerate(texts):
        role = "user" if number % 2 == 0 else "assistant"
        parent = Message.objects.create(conversation=conv, parent=parent, role=role, content=text)
        messages.append(parent)
    return conv, messages


def _found(user, text) -> list[str]:
    return [hit.message.content for hit in search(user, text).messages]


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("你好", "我们说你好世界吧"),  # two characters: the plain fallback
        ("你好世界", "我们说你好世界吧"),  # four: the trigram index
        ("東京タワー", "明日は東京タワーに行きます。"),
        ("こんにちは", "みなさん、こんにちは!"),
        ("中文", "这是一段中文文本"),
    ],
)
def test_chinese_and_japanese_are_found_inside_text_without_spaces(alice, query, text):
    _conversation(alice, text)
    _conversation(alice, "nothing of the sort here")
    assert _found(alice, query) == [text]


def test_an_emoji_with_a_skin_tone_is_found_and_another_tone_is_not(alice):
    _conversation(alice, "see you 👋🏽 tomorrow")
    _conversation(alice, "a plain 👋 wave")
    assert _found(alice, "👋🏽") == ["see you 👋🏽 tomorrow"]
    assert _found(alice, "👋🏿") == []
    assert _found(alice, "you 👋🏽 to") == ["see you 👋🏽 tomorrow"]


def test_queries_of_punctuation_or_emoji_alone_are_found(alice):
    """pg_trgm makes no trigrams of these: PostgreSQL scans the newest conversations instead."""
    _conversation(alice, "wow!!! 🎉🎉🎉 done。。。")
    _conversation(alice, "calm. 🎉 once")
    assert _found(alice, "!!!") == ["wow!!! 🎉🎉🎉 done。。。"]
    assert _found(alice, "🎉🎉🎉") == ["wow!!! 🎉🎉🎉 done。。。"]
    assert _found(alice, "。。。") == ["wow!!! 🎉🎉🎉 done。。。"]
    assert _found(alice, "🎉") == ["calm. 🎉 once", "wow!!! 🎉🎉🎉 done。。。"]
    results = search(alice, "!!!")
    assert results.bounded == (0 if connection.vendor == "sqlite" else search_module.SHORT_QUERY_CONVERSATIONS)


def test_case_is_ignored_for_ascii_and_for_accented_letters(alice):
    _conversation(alice, "Hello World")
    _conversation(alice, "Ünïcode everywhere")
    _conversation(alice, "L'ÉCOLE est fermée")
    assert _found(alice, "hello world") == ["Hello World"]
    assert _found(alice, "HELLO") == ["Hello World"]
    assert _found(alice, "ünïcode") == ["Ünïcode everywhere"]
    assert _found(alice, "ÜNÏCODE") == ["Ünïcode everywhere"]
    assert _found(alice, "école") == ["L'ÉCOLE est fermée"]
    assert _found(alice, "FERMÉE") == ["L'ÉCOLE est fermée"]


def test_accents_are_not_ignored(alice):
    """Documented in docs/performance.md: "ecole" does not find "école"."""
    _conversation(alice, "une école")
    assert _found(alice, "ecole") == []
    assert _found(alice, "école") == ["une école"]


def test_a_term_split_across_two_messages_is_no_match(alice):
    _conversation(alice, "I split te", "rm here")
    assert _found(alice, "term") == []
    assert _found(alice, "split te") == ["I split te"]


def test_another_users_conversations_are_never_found(alice, charlie, charlie_client):
    _conversation(alice, "alice's secret plan 你好世界", title="Secret title")
    _conversation(charlie, "charlie's own plan")
    assert _found(charlie, "secret") == []
    assert _found(charlie, "你好") == []
    assert _found(charlie, "你好世界") == []
    assert search(charlie, "Secret title").titles == []
    assert _found(charlie, "plan") == ["charlie's own plan"]
    page = charlie_client.get(reverse("search"), {"q": "secret"}).content.decode()
    partial = charlie_client.get(reverse("search"), {"q": "plan"}, headers={"HX-Request": "true"}).content.decode()
    assert "alice" not in page and "alice" not in partial
    assert "charlie&#x27;s own <mark>plan</mark>" in partial


def test_titles_are_found_and_link_to_the_conversation(alice):
    conv, _ = _conversation(alice, "hello", title="Trip to 北京 in spring")
    titles = search(alice, "北京").titles
    assert [(h.conversation, h.before, h.match, h.after) for h in titles] == [(conv, "Trip to ", "北京", " in spring")]
    assert titles[0].url == conv.get_absolute_url()
    assert [h.conversation for h in search(alice, "to 北京 in").titles] == [conv]


def test_messages_of_every_branch_are_found(alice):
    conv, (question, _first) = _conversation(alice, "question", "the first answer")
    second = Message.objects.create(conversation=conv, parent=question, role="assistant", content="the second answer")
    assert [m.content for m in conv.transcript()] == ["question", "the second answer"]
    assert _found(alice, "first answer") == ["the first answer"]
    assert _found(alice, "answer") == ["the first answer", "the second answer"]
    assert second.content in _found(alice, "second")


def test_the_index_follows_edits_and_deletions(alice):
    conv, (message,) = _conversation(alice, "before the edit")
    Message.objects.filter(pk=message.pk).update(content="after the change")
    assert _found(alice, "before") == []
    assert _found(alice, "after the") == ["after the change"]
    conv.delete()
    assert _found(alice, "after the") == []
    Conversation.objects.filter(pk=conv.pk).delete()
    renamed, _ = _conversation(alice, "x", title="Old name")
    renamed.rename("New name")
    assert search(alice, "Old name").titles == []
    assert [h.conversation for h in search(alice, "new name").titles] == [renamed]


def test_most_recently_active_conversations_come_first(alice):
    _conversation(alice, "needle in the old one", minutes_ago=60)
    _conversation(alice, "needle in the new one", minutes_ago=1)
    assert _found(alice, "needle") == ["needle in the new one", "needle in the old one"]


def test_a_short_query_reads_only_the_newest_conversations(alice, monkeypatch):
    monkeypatch.setattr(search_module, "SHORT_QUERY_CONVERSATIONS", 1)
    _conversation(alice, "旧的你好世界", minutes_ago=60)
    _conversation(alice, "新的东西", minutes_ago=1)
    assert _found(alice, "你好") == []
    assert search(alice, "你好").bounded == 1
    assert _found(alice, "你好世") == ["旧的你好世界"]
    assert search(alice, "你好世").bounded == 0


def test_like_wildcards_and_quotes_are_plain_text(alice):
    _conversation(alice, 'say "100%" _now_')
    _conversation(alice, "say 1000 now")
    assert _found(alice, '"100%"') == ['say "100%" _now_']
    assert _found(alice, "0%") == ['say "100%" _now_']
    assert _found(alice, "_now_") == ['say "100%" _now_']


def test_a_snippet_is_text_around_the_first_match():
    text = "a" * 100 + " the needle " + "b" * 100 + " needle"
    before, match, after = snippet(text, "NEEDLE", chars=10)
    assert (before, match, after) == ("…aaaaa the ", "needle", " bbbbbbbbb…")
    assert snippet("short needle text", "needle") == ("short ", "needle", " text")
    assert snippet("one\nline\n\nneedle", "needle") == ("one line ", "needle", "")


def test_a_snippet_never_cuts_an_emoji_sequence_or_an_accent():
    family = "👨‍👩‍👧"
    text = family + "x" * 5 + "needle"
    # 6 characters back fall inside the family (3 people joined by 2 ZWJs): it is kept whole.
    assert snippet(text, "needle", chars=6) == (family + "xxxxx", "needle", "")
    assert snippet("y" * 10 + text, "needle", chars=6) == ("…" + family + "xxxxx", "needle", "")
    combining = "e\u0301" * 3 + "needle"  # é as e + combining acute
    before, _match, _after = snippet(combining, "needle", chars=5)
    assert not before.lstrip("…").startswith("\u0301")
    assert snippet("hi 👋🏽 there", "👋🏽") == ("hi ", "👋🏽", " there")


def test_a_snippet_folds_case_fully_and_without_a_match_gives_the_texts_start():
    assert snippet("die straße", "STRASSE") == ("die ", "straße", "")
    assert snippet("straße" + "x" * 100, "absent", chars=5) == ("straßexxxx", "", "…")


def test_results_are_escaped_and_only_the_match_is_marked(alice, alice_client):
    _conversation(alice, "<script>alert(1)</script> the <b>needle</b> &amp;", title="<i>Title</i>")
    html = alice_client.get(reverse("search"), {"q": "needle"}, headers={"HX-Request": "true"}).content.decode()
    assert "<script>" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; the &lt;b&gt;<mark>needle</mark>&lt;/b&gt; &amp;amp;" in html
    assert "&lt;i&gt;Title&lt;/i&gt;" in html


def test_the_sidebar_has_a_search_box_that_searches_as_one_types(alice_client):
    page = alice_client.get(reverse("index")).content.decode()
    assert 'id="search-q"' in page
    assert f'action="{reverse("search")}"' in page and 'method="get"' in page
    assert 'hx-trigger="input changed delay:250ms, search"' in page
    assert 'id="conversation-list"' in page


def test_without_javascript_the_search_is_a_whole_page(alice, alice_client, conversation):
    conv, (message,) = _conversation(alice, "findable words")
    page = alice_client.get(reverse("search"), {"q": "findable"}).content.decode()
    assert 'id="conversation-list"' in page  # the sidebar
    assert f'href="{conv.get_absolute_url()}?m={message.id}#msg-{message.id}"' in page
    assert "<mark>findable</mark>" in page
    assert "Nothing found" in alice_client.get(reverse("search"), {"q": "absent text"}).content.decode()


def test_an_empty_query_gives_htmx_nothing_so_the_list_comes_back(alice, alice_client):
    _conversation(alice, "anything")
    response = alice_client.get(reverse("search"), {"q": "   "}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and response.content == b""


def test_a_result_opens_the_branch_of_its_message_without_switching(alice, alice_client):
    conv, (question, first) = _conversation(alice, "question", "the first answer")
    Message.objects.create(conversation=conv, parent=question, role="assistant", content="the second answer")
    (hit,) = search(alice, "first answer").messages
    page = alice_client.get(hit.url).content.decode()
    assert f'id="msg-{first.id}"' in page and "the second answer" not in page
    assert 'id="other-branch"' in page and 'id="composer"' not in page
    # Nothing was stored: the conversation itself still shows the second answer.
    assert [m.content for m in conv.transcript()] == ["question", "the second answer"]
    plain = alice_client.get(conv.get_absolute_url()).content.decode()
    assert "the second answer" in plain and 'id="other-branch"' not in plain and 'id="composer"' in plain


def test_a_result_on_the_current_branch_shows_the_composer(alice, alice_client):
    _conv, (_question, answer) = _conversation(alice, "question", "the only answer")
    (hit,) = search(alice, "only answer").messages
    page = alice_client.get(hit.url).content.decode()
    assert f'id="msg-{answer.id}"' in page and 'id="composer"' in page and 'id="other-branch"' not in page


def test_a_result_far_up_a_long_conversation_is_on_the_page(alice, alice_client, settings):
    settings.CHAT_PAGE_MESSAGES = 5
    texts = [f"message number {n:03d}" for n in range(30)]
    _conv, messages = _conversation(alice, *texts)
    (hit,) = search(alice, "number 002").messages
    page = alice_client.get(hit.url).content.decode()
    assert f'id="msg-{messages[2].id}"' in page and f'id="msg-{messages[29].id}"' in page
    assert f"?before={messages[1].id}" in page  # and the earlier ones still load


def test_a_message_deep_in_another_branch_can_become_the_current_branch(alice, alice_client):
    conv, (_question, _old_answer, follow_up) = _conversation(alice, "question", "old answer", "a deep follow-up")
    edited = Message.objects.create(conversation=conv, role="user", content="edited question")
    Message.objects.create(conversation=conv, parent=edited, role="assistant", content="new answer")
    assert "a deep follow-up" not in [m.content for m in conv.transcript()]
    (hit,) = search(alice, "deep follow").messages
    page = alice_client.get(hit.url).content.decode()
    assert "a deep follow-up" in page and "edited question" not in page
    assert f'action="{reverse("switch", args=[conv.id, follow_up.id])}"' in page
    follow_up.show()  # what that form's switch does
    assert [m.content for m in conv.transcript()] == ["question", "old answer", "a deep follow-up"]


def test_another_users_message_id_in_the_link_shows_nothing_of_theirs(alice, charlie, alice_client):
    conv, _ = _conversation(alice, "alice's question")
    _other, (stranger,) = _conversation(charlie, "charlie's words")
    page = alice_client.get(f"{conv.get_absolute_url()}?m={stranger.id}").content.decode()
    assert "alice&#x27;s question" in page and "charlie" not in page


def test_charlie_cannot_open_alices_result_link(alice, charlie_client):
    _conversation(alice, "private words")
    (hit,) = search(alice, "private").messages
    assert charlie_client.get(hit.url).status_code == 404


def test_seedlibrary_makes_chains_of_mixed_text_that_benchsearch_measures(capsys):
    import json

    from django.core.management import call_command

    call_command("seedlibrary", conversations=5, messages=4, user="bench", seed=3)
    library = Conversation.objects.filter(owner__username="bench")
    assert library.count() == 5
    assert Message.objects.filter(conversation__in=library).count() == 20
    assert all(len(c.transcript()) == 4 for c in library)
    capsys.readouterr()
    call_command("benchsearch", user="bench", repeat=2, json=True)
    report = json.loads(capsys.readouterr().out)
    assert [row["query"] for row in report["rows"]][:2] == ["common word", "rare word"]
    assert all(row["p95_ms"] >= row["median_ms"] >= 0 for row in report["rows"])
