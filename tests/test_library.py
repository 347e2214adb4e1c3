"""The conversation library: the sidebar's date groups and pages, pinning and archiving."""

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient
from django.urls import reverse
from django.utils import timezone

from conversations import frames
from conversations.models import Conversation, Message, SidebarPage
from tests.wsclient import connect, is_final, send, until_final

pytestmark = pytest.mark.django_db(transaction=True)

TODAY = date(2026, 12, 3)


def _listed(owner, title: str, updated_at: datetime) -> Conversation:
    """A conversation with a message (so the sidebar lists it), last active at ``updated_at``."""
    conv = Conversation.objects.create(owner=owner, title=title, model_key="demo:demo")
    Message.objects.create(conversation=conv, role="user", content="Hi")
    Conversation.objects.filter(pk=conv.pk).update(updated_at=updated_at)
    conv.refresh_from_db()
    return conv


def _headings(html: str) -> list[str]:
    return re.findall(r'<li class="nav-heading" id="nav-heading-[^"]+">([^<]+)</li>', html)


def _entries(html: str) -> list[str]:
    return re.findall(r'id="nav-item-([0-9a-f-]+)"', html)


def _groups(page: SidebarPage) -> dict[str, list[str]]:
    return {group.label: [c.title for c in group.items] for group in page.groups if group.items}


def test_the_sidebar_groups_conversations_by_today_yesterday_the_previous_days_and_months(alice, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    # 23:30 UTC on the 2nd is already the 3rd in Berlin: the server's day decides.
    _listed(alice, "late last night UTC", datetime(2026, 12, 2, 23, 30, tzinfo=UTC))
    _listed(alice, "this morning", datetime(2026, 12, 3, 8, 0, tzinfo=UTC))
    _listed(alice, "yesterday", datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    _listed(alice, "six days ago", datetime(2026, 11, 27, 12, 0, tzinfo=UTC))
    _listed(alice, "twenty days ago", datetime(2026, 11, 13, 12, 0, tzinfo=UTC))
    _listed(alice, "in October", datetime(2026, 10, 20, 12, 0, tzinfo=UTC))
    _listed(alice, "a year ago", datetime(2025, 12, 1, 12, 0, tzinfo=UTC))

    page = SidebarPage.load(alice, today=TODAY)

    assert _groups(page) == {
        "Today": ["this morning", "late last night UTC"],
        "Yesterday": ["yesterday"],
        "Previous 7 days": ["six days ago"],
        "Previous 30 days": ["twenty days ago"],
        "October 2026": ["in October"],
        "December 2025": ["a year ago"],
    }


def test_the_sidebar_shows_the_group_headings_in_order_with_their_entries(alice_client, alice):
    now = timezone.now()
    older = _listed(alice, "Older one", now - timedelta(days=1))
    newer = _listed(alice, "Newer one", now)

    body = alice_client.get(reverse("index")).content.decode()

    assert _headings(body) == ["Pinned", "Today", "Yesterday"]
    assert _entries(body) == [str(newer.id), str(older.id)]
    assert body.index("Today") < body.index("Newer one") < body.index("Yesterday") < body.index("Older one")


def test_the_first_page_always_has_the_pinned_and_today_headings_live_updates_insert_after(alice_client, alice):
    _listed(alice, "Long ago", timezone.now() - timedelta(days=90))

    body = alice_client.get(reverse("index")).content.decode()

    assert 'id="nav-heading-pinned"' in body and 'id="nav-heading-today"' in body


def test_a_pinned_conversation_stays_on_top_of_the_sidebar(alice_client, alice):
    now = timezone.now()
    old = _listed(alice, "Old but pinned", now - timedelta(days=40))
    new = _listed(alice, "Brand new", now)

    response = alice_client.post(reverse("pin", args=[old.id]), {"pinned": "1"})

    assert response.status_code == 302 and response["Location"] == old.get_absolute_url()
    body = alice_client.get(reverse("index")).content.decode()
    assert _entries(body) == [str(old.id), str(new.id)]
    assert body.index("Pinned") < body.index("Old but pinned") < body.index("Today") < body.index("Brand new")
    old.refresh_from_db()
    assert old.pinned_at is not None


def test_unpinning_puts_the_conversation_back_in_its_date_group(alice_client, alice):
    conv = _listed(alice, "Was pinned", timezone.now() - timedelta(days=40))
    conv.pin(True)

    alice_client.post(reverse("pin", args=[conv.id]), {"pinned": "0"})

    conv.refresh_from_db()
    assert conv.pinned_at is None
    page = SidebarPage.load(alice)
    assert page.pinned == [] and [c.title for g in page.groups for c in g.items] == ["Was pinned"]


def test_the_header_offers_pin_or_unpin_and_archive_or_unarchive(alice_client, conversation, reply):
    body = alice_client.get(conversation.get_absolute_url()).content.decode()
    assert 'class="link pin"' in body and 'class="link archive"' in body

    conversation.pin(True)
    body = alice_client.get(conversation.get_absolute_url()).content.decode()
    assert 'class="link unpin"' in body and 'class="link pin"' not in body

    conversation.archive(True)
    body = alice_client.get(conversation.get_absolute_url()).content.decode()
    assert 'class="link unarchive"' in body and 'class="link archive"' not in body


def test_archiving_takes_a_conversation_out_of_the_sidebar_and_lists_it_under_archived(
    alice_client, conversation, reply
):
    response = alice_client.post(reverse("archive", args=[conversation.id]), {"archived": "1"})

    assert response.status_code == 302
    assert f'id="nav-item-{conversation.id}"' not in alice_client.get(reverse("index")).content.decode()
    archived = alice_client.get(reverse("archived")).content.decode()
    assert f'id="archived-{conversation.id}"' in archived and "Alice&#x27;s plans" in archived
    # Still there by its URL, to read and to continue.
    page = alice_client.get(conversation.get_absolute_url())
    assert page.status_code == 200 and 'id="composer"' in page.content.decode()


def test_unarchiving_from_the_archived_page_brings_it_back_to_the_sidebar(alice_client, conversation, reply):
    conversation.archive(True)

    response = alice_client.post(
        reverse("archive", args=[conversation.id]), {"archived": "0", "next": reverse("archived")}
    )

    assert response["Location"] == reverse("archived")
    assert f'id="nav-item-{conversation.id}"' in alice_client.get(reverse("index")).content.decode()
    assert "Nothing is archived." in alice_client.get(reverse("archived")).content.decode()


def test_archiving_also_unpins(alice, conversation, reply):
    conversation.pin(True)
    conversation.archive(True)
    conversation.refresh_from_db()
    assert conversation.archived and conversation.pinned_at is None


def test_a_redirect_back_never_leaves_the_site(alice_client, conversation, reply):
    response = alice_client.post(
        reverse("archive", args=[conversation.id]), {"archived": "1", "next": "https://evil.example/"}
    )
    assert response["Location"] == conversation.get_absolute_url()


def test_the_sidebar_pages_by_cursor_with_every_conversation_once(alice_client, alice):
    base = timezone.now() - timedelta(days=3)
    made = []
    for n in range(120):
        # Pairs share one updated_at: the id breaks the tie, and neither is lost or repeated.
        made.append(_listed(alice, f"conversation {n}", base - timedelta(minutes=n // 2)))

    first = alice_client.get(reverse("index")).content.decode()
    seen = _entries(first)
    assert len(seen) == 50
    cursor = re.search(r'hx-get="/sidebar/\?before=([^"]+)" hx-trigger="intersect once"', first).group(1)
    pages = 1
    while cursor:
        fragment = alice_client.get(f"/sidebar/?before={cursor}", headers={"HX-Request": "true"}).content.decode()
        seen += _entries(fragment)
        # A page that continues the last group does not repeat its heading.
        assert "Previous 7 days" not in fragment
        found = re.search(r'hx-get="/sidebar/\?before=([^"]+)"', fragment)
        cursor = found and found.group(1)
        pages += 1

    expected = [str(c.id) for c in sorted(made, key=lambda c: (c.updated_at, str(c.id)), reverse=True)]
    assert seen == expected
    assert pages == 3


def test_a_conversation_that_moves_up_meanwhile_is_not_shown_twice(alice_client, alice):
    base = timezone.now() - timedelta(days=3)
    made = [_listed(alice, f"conversation {n}", base - timedelta(minutes=n)) for n in range(60)]
    first = alice_client.get(reverse("index")).content.decode()
    cursor = re.search(r'\?before=([^"]+)"', first).group(1)
    made[55].touch()  # a new message: it is now at the top, already shown there live

    fragment = alice_client.get(f"/sidebar/?before={cursor}", headers={"HX-Request": "true"}).content.decode()

    assert len(_entries(fragment)) == 9 and str(made[55].id) not in _entries(fragment)


def test_without_javascript_the_more_link_shows_the_next_page_in_the_sidebar(alice_client, alice):
    base = timezone.now() - timedelta(days=3)
    made = [_listed(alice, f"conversation {n}", base - timedelta(minutes=n)) for n in range(55)]
    first = alice_client.get(reverse("index")).content.decode()
    href = re.search(r'<a href="(/sidebar/\?before=[^"]+)">More</a>', first).group(1)

    page = alice_client.get(href.replace("&amp;", "&")).content.decode()

    assert _entries(page) == [str(c.id) for c in made[50:]]
    assert "Previous 7 days" in _headings(page)  # a page of its own has its heading
    assert "<html" in page


def test_a_bad_sidebar_cursor_is_a_404(alice_client):
    assert alice_client.get("/sidebar/?before=nonsense").status_code == 404
    assert alice_client.get("/sidebar/").status_code == 404


def test_another_users_conversations_never_show_in_the_sidebar_pages(alice, charlie_client):
    _listed(alice, "Alice's secret", timezone.now())
    assert "Alice&#x27;s secret" not in charlie_client.get(reverse("index")).content.decode()


@pytest.mark.parametrize("name, data", [("pin", {"pinned": "1"}), ("archive", {"archived": "1"}), ("share", {})])
def test_charlie_cannot_pin_archive_or_share_alices_conversation(
    charlie_client, conversation, reply, settings, name, data
):
    settings.CHAT_SHARING = "links"

    response = charlie_client.post(reverse(name, args=[conversation.id]), data)

    assert response.status_code == 404
    conversation.refresh_from_db()
    assert conversation.pinned_at is None and not conversation.archived and not conversation.shares.exists()


def test_a_new_message_moves_the_entry_to_the_top_of_today_or_of_pinned(alice, conversation, reply):
    assert 'hx-swap-oob="afterend:#nav-heading-today"' in frames.nav_moved(conversation)
    assert "aria-current" not in frames.nav_moved(conversation)  # one rendering for every tab

    conversation.pin(True)
    assert 'hx-swap-oob="afterend:#nav-heading-pinned"' in frames.nav_moved(conversation)

    conversation.archive(True)
    assert "nav-item" not in frames.nav_moved(conversation)  # an archived one stays out of the sidebar


async def _until(communicator, needle: str) -> str:
    while True:
        frame = await communicator.receive_from(timeout=5)
        if needle in frame:
            return frame


async def test_a_sent_message_moves_the_entry_into_today_in_every_open_tab_of_the_owner(alice, conversation, reply):
    await database_sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(
        updated_at=timezone.now() - timedelta(days=5)
    )
    other = await database_sync_to_async(_listed)(alice, "Another one", timezone.now())
    tab = await connect(alice, conversation)
    other_tab = await connect(alice, other)

    await send(tab, action="send", text="Once more")

    ended = False
    for listening in (tab, other_tab):
        while True:  # the move is gathered for a moment: the demo reply may end first
            shown = await listening.receive_from(timeout=5)
            ended = ended or (listening is tab and is_final(shown))
            if "nav-heading-today" in shown:
                break
        assert f'<li id="nav-item-{conversation.id}" hx-swap-oob="delete"></li>' in shown
        assert re.search(rf'hx-swap-oob="afterend:#nav-heading-today"><li id="nav-item-{conversation.id}"', shown)
    if not ended:
        await until_final(tab)  # the demo reply ends within the test
    await tab.disconnect()
    await other_tab.disconnect()


async def test_pinning_reaches_every_open_tab_of_the_owner(alice, conversation, reply):
    other = await database_sync_to_async(_listed)(alice, "Another one", timezone.now())
    this_tab = await connect(alice, conversation)
    other_tab = await connect(alice, other)
    client = AsyncClient()
    await client.aforce_login(alice)

    response = await client.post(
        reverse("pin", args=[conversation.id]), {"pinned": "1"}, headers={"HX-Request": "true"}
    )

    assert response.status_code == 200 and 'class="link unpin"' in response.content.decode()
    controls = await _until(this_tab, f'id="library-{conversation.id}"')
    assert 'hx-swap-oob="outerHTML"' in controls and 'class="link unpin"' in controls
    for tab in (this_tab, other_tab):
        sidebar = await _until(tab, 'id="conversation-list" hx-swap-oob="outerHTML"')
        pinned_part = sidebar[sidebar.index("nav-heading-pinned") : sidebar.index("nav-heading-today")]
        assert f'id="nav-item-{conversation.id}"' in pinned_part
    await this_tab.disconnect()
    await other_tab.disconnect()


async def test_archiving_takes_the_entry_out_of_every_open_tabs_sidebar(alice, conversation, reply):
    other = await database_sync_to_async(_listed)(alice, "Another one", timezone.now())
    other_tab = await connect(alice, other)
    client = AsyncClient()
    await client.aforce_login(alice)

    await client.post(reverse("archive", args=[conversation.id]), {"archived": "1"})

    sidebar = await _until(other_tab, 'id="conversation-list" hx-swap-oob="outerHTML"')
    assert f'id="nav-item-{conversation.id}"' not in sidebar and f'id="nav-item-{other.id}"' in sidebar
    await other_tab.disconnect()


async def test_another_users_tabs_hear_nothing_of_alices_pin(alice, charlie, conversation, reply):
    mine = await database_sync_to_async(_listed)(charlie, "Charlie's", timezone.now())
    charlie_tab = await connect(charlie, mine)
    client = AsyncClient()
    await client.aforce_login(alice)

    await client.post(reverse("pin", args=[conversation.id]), {"pinned": "1"})
    await client.aforce_login(charlie)
    await client.post(reverse("pin", args=[mine.id]), {"pinned": "1"})

    # Charlie's own pin is the first sidebar his tab hears of; alice's never reached it.
    first = await _until(charlie_tab, 'id="conversation-list"')
    assert f'id="nav-item-{mine.id}"' in first and str(conversation.id) not in first
    await charlie_tab.disconnect()


async def test_a_rename_reaches_the_sidebar_of_the_owners_other_tabs(alice, conversation, reply):
    other = await database_sync_to_async(_listed)(alice, "Another one", timezone.now())
    other_tab = await connect(alice, other)
    client = AsyncClient()
    await client.aforce_login(alice)

    await client.post(reverse("rename", args=[conversation.id]), {"title": "Renamed elsewhere"})

    entry = await _until(other_tab, f'id="nav-{conversation.id}"')
    assert 'hx-swap-oob="outerHTML"' in entry and "Renamed elsewhere" in entry and "aria-current" not in entry
    await other_tab.disconnect()
