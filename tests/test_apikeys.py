"""API keys from the settings page: shown once, stored as a digest, named,
revocable, with a last-used time; staff see that keys exist, never a key.

alice owns the keys; charlie has no access to them; sam is staff who may view
keys but not revoke them; root is a superuser."""

import hashlib
import json
import logging
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations.models import ApiKey

pytestmark = pytest.mark.django_db

SETTINGS = reverse("account_settings")
CREATE = reverse("create_api_key")
CHANGELIST = reverse("admin:conversations_apikey_changelist")


def _created(client, name: str = "laptop script") -> str:
    """Create a key from the settings page; the key as the page shows it."""
    response = client.post(CREATE, {"name": name})
    assert response.status_code == 201
    return re.search(r'<code id="new-api-key">([^<]+)</code>', response.content.decode())[1]


def _revoke_url(key: ApiKey) -> str:
    return reverse("revoke_api_key", args=[key.pk])


@pytest.fixture
def issued(alice) -> tuple[ApiKey, str]:
    return ApiKey.issue(alice, "laptop script")


@pytest.fixture
def root_client(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", password="root-password-123"))
    return client


@pytest.fixture
def sam_client(django_user_model) -> Client:
    sam = django_user_model.objects.create_user("sam", password="sam-password-123", is_staff=True)
    sam.user_permissions.add(Permission.objects.get(content_type__app_label="conversations", codename="view_apikey"))
    client = Client()
    client.force_login(sam)
    return client


# --- Issuing -------------------------------------------------------------------


def test_creating_a_key_shows_it_once_with_a_note_and_stores_only_its_digest(alice_client, alice):
    response = alice_client.post(CREATE, {"name": "laptop script"})

    body = response.content.decode()
    assert response.status_code == 201
    raw = re.search(r'<code id="new-api-key">([^<]+)</code>', body)[1]
    assert "Copy it now: it will not be shown again." in body
    key = ApiKey.objects.get()
    assert (key.owner, key.name, key.prefix) == (alice, "laptop script", raw[:13])
    assert key.digest == hashlib.sha256(raw.encode()).hexdigest()
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    assert not any(raw in str(value) for value in row.values())
    assert not any(raw[13:] in str(value) for value in row.values())  # not even the part after the prefix

    # Never again: not on the next page, not in the session.
    again = alice_client.get(SETTINGS).content.decode()
    assert raw not in again and 'id="new-api-key"' not in again
    assert f"{key.prefix}…" in again and "laptop script" in again
    assert raw not in json.dumps(dict(alice_client.session.items()))


def test_a_key_is_chat_and_32_random_bytes_never_shaped_like_a_provider_key(alice):
    first, raw = ApiKey.issue(alice, "one")
    _second, other = ApiKey.issue(alice, "two")
    assert raw.startswith("chat_") and len(raw) >= len("chat_") + 43
    assert first.prefix == raw[:13] and raw != other


def test_a_key_needs_a_name(alice_client):
    response = alice_client.post(CREATE, {"name": "  "})
    assert response.status_code == 400
    assert "Give the key a name." in response.content.decode()
    assert not ApiKey.objects.exists()


def test_the_page_lists_keys_with_never_for_one_not_used_yet(alice_client, issued):
    key, _raw = issued
    ApiKey.issue(key.owner, "used one")
    ApiKey.objects.filter(name="used one").update(last_used_at=timezone.now())
    body = alice_client.get(SETTINGS).content.decode()
    assert 'id="settings-api-keys"' in body
    assert body.count("never") == 1
    assert f'action="{_revoke_url(key)}"' in body and f'action="{CREATE}#settings-api-keys"' in body


def test_the_key_stays_out_of_the_logs(alice_client, caplog):
    with caplog.at_level(logging.DEBUG):
        raw = _created(alice_client)
        ApiKey.authenticate(raw)
    assert raw not in caplog.text


def test_an_error_report_hides_the_new_key(alice_client, monkeypatch):
    """A 500 after the key was made (mailed to ADMINS, or shown with DEBUG) shows no local holding it."""
    from django.views.debug import ExceptionReporter

    from conversations import views

    made = []
    issue = ApiKey.issue

    def remembered(user, name):
        key, raw = issue(user, name)
        made.append(raw)
        return key, raw

    def broken(*args, **kwargs):
        raise RuntimeError("the page broke")

    monkeypatch.setattr(ApiKey, "issue", remembered)
    monkeypatch.setattr(views, "_render_settings", broken)
    with pytest.raises(RuntimeError) as failed:
        alice_client.post(CREATE, {"name": "laptop script"})
    report = ExceptionReporter(None, failed.type, failed.value, failed.tb).get_traceback_html()
    assert "create_api_key" in report and made and made[0] not in report
    assert f"&lt;API key {made[0][:13]}…&gt;" in report  # the locals are there, as the prefix


# --- The limit -------------------------------------------------------------------


def test_a_user_has_at_most_chat_max_api_keys_in_use(alice_client, alice, settings):
    settings.CHAT_MAX_API_KEYS = 2
    _created(alice_client, "one")
    _created(alice_client, "two")

    response = alice_client.post(CREATE, {"name": "three"})

    assert response.status_code == 400
    assert "You already have 2 API keys, the most allowed. Revoke one to create another." in response.content.decode()
    assert 'id="new-api-key"' not in response.content.decode()
    assert ApiKey.objects.filter(owner=alice).count() == 2
    with pytest.raises(ApiKey.LimitReached):
        ApiKey.issue(alice, "three")

    # A revoked key frees its place.
    ApiKey.objects.get(name="one").revoke()
    _created(alice_client, "three")


def test_the_limit_is_per_user_and_zero_means_none(alice, charlie, settings):
    settings.CHAT_MAX_API_KEYS = 1
    ApiKey.issue(alice, "alice's")
    ApiKey.issue(charlie, "charlie's")
    settings.CHAT_MAX_API_KEYS = 0
    for n in range(3):
        ApiKey.issue(alice, f"more {n}")
    assert ApiKey.objects.filter(owner=alice).count() == 4


def test_the_limit_defaults_to_20():
    from chatsite import settings as project_settings

    assert project_settings.CHAT_MAX_API_KEYS == 20


# --- Authenticating ---------------------------------------------------------------


def test_authenticate_returns_the_key_with_its_owner_loaded(issued, alice, django_assert_num_queries):
    key, raw = issued
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())  # no write in this call
    with django_assert_num_queries(1):
        found = ApiKey.authenticate(raw)
        assert found == key and found.owner == alice


def test_authenticate_refuses_a_wrong_or_malformed_key(issued):
    _key, raw = issued
    for wrong in [raw[:-1], raw + "x", raw.upper(), "chat_" + "A" * 43, raw[5:], "", None, 42, "chat_" + "a" * 300]:
        assert ApiKey.authenticate(wrong) is None, wrong


def test_authenticate_refuses_a_revoked_key(issued):
    key, raw = issued
    key.revoke()
    assert ApiKey.authenticate(raw) is None
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_authenticate_refuses_the_key_of_an_inactive_user(issued, alice):
    key, raw = issued
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    assert ApiKey.authenticate(raw) is None
    alice.is_active = True
    alice.save(update_fields=["is_active"])
    assert ApiKey.authenticate(raw) == key


def test_last_use_is_written_at_most_once_a_minute(issued, django_assert_num_queries):
    key, raw = issued
    with django_assert_num_queries(2):  # the lookup and the first use
        ApiKey.authenticate(raw)
    key.refresh_from_db()
    first_use = key.last_used_at
    assert first_use is not None

    for _ in range(5):
        with django_assert_num_queries(1):  # the lookup only: no write
            ApiKey.authenticate(raw)
    key.refresh_from_db()
    assert key.last_used_at == first_use

    # A minute later, as if: written again.
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=first_use - timedelta(seconds=61))
    with django_assert_num_queries(2):
        ApiKey.authenticate(raw)
    key.refresh_from_db()
    assert key.last_used_at > first_use - timedelta(seconds=61)


def test_last_use_is_written_with_one_conditional_update(issued):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _key, raw = issued
    with CaptureQueriesContext(connection) as captured:
        ApiKey.authenticate(raw)
    (update,) = [q["sql"] for q in captured if q["sql"].startswith("UPDATE")]
    assert '"last_used_at" IS NULL OR' in update and '"last_used_at" <' in update


# --- Revoking --------------------------------------------------------------------


def test_revoking_a_key_ends_it_and_takes_it_off_the_list(alice_client, issued):
    key, raw = issued
    response = alice_client.post(_revoke_url(key), follow=True)

    assert response.redirect_chain == [(f"{SETTINGS}#settings-api-keys", 302)]
    body = response.content.decode()
    assert "API key “laptop script” revoked: it no longer works." in body
    assert f'action="{_revoke_url(key)}"' not in body and "You have no API keys." in body
    assert ApiKey.authenticate(raw) is None
    # A revoked key is no longer the user's to revoke again.
    assert alice_client.post(_revoke_url(key)).status_code == 404


def test_charlie_cannot_revoke_alices_key_nor_see_it(charlie_client, issued):
    key, raw = issued
    assert charlie_client.post(_revoke_url(key)).status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None and ApiKey.authenticate(raw) == key

    body = charlie_client.get(SETTINGS).content.decode()
    assert "laptop script" not in body and key.prefix not in body
    assert "You have no API keys." in body


def test_creating_and_revoking_take_only_posts(alice_client, issued):
    key, _raw = issued
    assert alice_client.get(CREATE).status_code == 405
    assert alice_client.get(_revoke_url(key)).status_code == 405
    assert ApiKey.objects.count() == 1 and ApiKey.objects.active().count() == 1


def test_anonymous_visitors_are_sent_to_log_in(client, issued):
    key, _raw = issued
    for response in (client.get(SETTINGS), client.post(CREATE, {"name": "x"}), client.post(_revoke_url(key))):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    assert ApiKey.objects.count() == 1 and ApiKey.objects.active().count() == 1


def test_revoking_needs_the_csrf_token(alice, issued):
    key, _raw = issued
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(_revoke_url(key)).status_code == 403
    assert client.post(CREATE, {"name": "x"}).status_code == 403
    assert ApiKey.objects.active().count() == 1


# --- Deleting the account, exporting -----------------------------------------------


def test_deleting_the_account_deletes_its_keys(alice_client, alice, issued, charlie):
    _key, raw = issued
    charlies, _ = ApiKey.issue(charlie, "charlie's")
    response = alice_client.post(reverse("delete_account"), {"password": "alice-password-123"})
    assert response.status_code == 302
    assert list(ApiKey.objects.all()) == [charlies]
    assert ApiKey.authenticate(raw) is None


def test_the_download_holds_no_key(alice_client, issued, conversation):
    key, raw = issued
    response = alice_client.get(reverse("account_export"))
    text = b"".join(response.streaming_content).decode()
    assert "Alice's plans" in text
    for secret in (raw, key.digest, key.prefix, "laptop script"):
        assert secret not in text


# --- The admin ---------------------------------------------------------------------


def test_the_admin_lists_keys_by_prefix_never_the_digest_or_key(root_client, issued):
    key, raw = issued
    ApiKey.issue(key.owner, "revoked one")[0].revoke()
    body = root_client.get(CHANGELIST).content.decode()
    assert f"{key.prefix}…" in body and "laptop script" in body and "alice" in body
    assert key.digest not in body and raw not in body and raw[13:] not in body

    page = root_client.get(reverse("admin:conversations_apikey_change", args=[key.pk])).content.decode()
    assert f"{key.prefix}…" in page
    assert key.digest not in page and raw not in page and "digest" not in page.lower()


def test_the_admin_adds_and_changes_no_key(root_client, issued):
    key, _raw = issued
    assert root_client.get(reverse("admin:conversations_apikey_add")).status_code == 403
    response = root_client.post(reverse("admin:conversations_apikey_change", args=[key.pk]), {"name": "renamed"})
    assert response.status_code == 403
    key.refresh_from_db()
    assert key.name == "laptop script"


def test_the_admin_refuses_lookups_on_the_digest(root_client, issued):
    key, _raw = issued
    response = root_client.get(CHANGELIST, {"digest__startswith": key.digest[:4]})
    assert response.status_code in (302, 400)


def test_staff_who_may_revoke_revoke_selected_keys(root_client, issued, charlie):
    key, raw = issued
    charlies, charlies_raw = ApiKey.issue(charlie, "charlie's")
    assert 'value="revoke"' in root_client.get(CHANGELIST).content.decode()

    response = root_client.post(CHANGELIST, {"action": "revoke", "_selected_action": [str(key.pk)]}, follow=True)

    assert "1 API key revoked." in response.content.decode()
    assert ApiKey.authenticate(raw) is None
    assert ApiKey.authenticate(charlies_raw) == charlies
    assert ApiKey.objects.count() == 2  # revoked, not deleted


def test_staff_without_the_revoke_permission_see_keys_but_cannot_revoke(sam_client, issued):
    key, raw = issued
    body = sam_client.get(CHANGELIST).content.decode()
    assert f"{key.prefix}…" in body
    assert 'value="revoke"' not in body and "delete_selected" not in body

    sam_client.post(CHANGELIST, {"action": "revoke", "_selected_action": [str(key.pk)]})
    assert ApiKey.authenticate(raw) == key


def test_an_admin_deleting_a_user_deletes_their_keys(root_client, alice, issued):
    response = root_client.post(reverse("admin:auth_user_delete", args=[alice.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not ApiKey.objects.exists()
