from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations.models import SignupAttempt

pytestmark = pytest.mark.django_db

SIGNUP = {"password1": "a-long-passphrase-9", "password2": "a-long-passphrase-9"}


def test_it_makes_the_first_account_a_superuser(client):
    response = client.post(reverse("signup"), {"username": "first", **SIGNUP})
    assert response.status_code == 302
    first = get_user_model().objects.get(username="first")
    assert first.is_superuser and first.is_staff


def test_it_makes_later_accounts_ordinary_users(client, alice):
    client.post(reverse("signup"), {"username": "second", **SIGNUP})
    second = get_user_model().objects.get(username="second")
    assert not second.is_superuser and not second.is_staff


def test_it_logs_the_new_account_in(client):
    client.post(reverse("signup"), {"username": "first", **SIGNUP})
    response = client.get(reverse("index"))
    assert response.status_code == 200
    assert response.wsgi_request.user.username == "first"


def test_it_rejects_mismatched_passwords(client):
    response = client.post(reverse("signup"), {"username": "x", "password1": "a-long-passphrase-9", "password2": "no"})
    assert response.status_code == 200
    assert not get_user_model().objects.filter(username="x").exists()


def test_it_closes_signup(client, settings):
    settings.CHAT_SIGNUP = "closed"
    response = client.post(reverse("signup"), {"username": "x", **SIGNUP})
    assert response.status_code == 403
    assert not get_user_model().objects.exists()
    assert "Create an account" not in client.get(reverse("login")).content.decode()


def test_it_logs_in_and_out(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-password-123"})
    assert response.status_code == 302
    assert client.get(reverse("index")).status_code == 200
    client.post(reverse("logout"))
    assert client.get(reverse("index")).status_code == 302


@pytest.mark.parametrize("name", ["index"])
def test_it_requires_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_requires_login_for_conversations(client, conversation):
    response = client.get(conversation.get_absolute_url())
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_wrong_passwords_lock_the_account_out_from_that_address_and_say_for_how_long(client, alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 429
    assert (
        "Too many failed log-ins" in response.content.decode()
        and "Try again in 15 minutes" in response.content.decode()
    )
    # Even the right password is refused during the pause.
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-password-123"})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_right_password_before_the_limit_logs_in_and_resets_the_count(client, alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-password-123"})
    assert response.status_code == 302
    client.logout()
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200


def _sign_up(client, username, address="203.0.113.7"):
    return client.post(reverse("signup"), {"username": username, **SIGNUP}, REMOTE_ADDR=address)


def test_the_sixth_sign_up_from_one_address_in_an_hour_is_refused_and_says_when_to_try_again(client, settings):
    settings.CHAT_SIGNUPS_PER_HOUR = 5
    for number in range(5):
        assert _sign_up(Client(), f"user{number}").status_code == 302
    response = _sign_up(client, "sixth")
    assert response.status_code == 429
    body = response.content.decode()
    assert "Too many accounts were created from your address. Try again in 60 minutes." in body
    assert 'value="sixth"' in body  # what was typed comes back...
    assert SIGNUP["password1"] not in body  # ...but for the passwords
    assert not get_user_model().objects.filter(username="sixth").exists()
    assert "_auth_user_id" not in client.session


def test_a_sign_up_from_another_address_is_accepted_when_one_address_is_refused(settings):
    settings.CHAT_SIGNUPS_PER_HOUR = 2
    for number in range(2):
        _sign_up(Client(), f"user{number}")
    assert _sign_up(Client(), "refused").status_code == 429
    assert _sign_up(Client(), "elsewhere", address="198.51.100.9").status_code == 302
    assert get_user_model().objects.filter(username="elsewhere").exists()


def test_the_refusal_counts_down_from_the_oldest_sign_up_in_the_hour(settings):
    settings.CHAT_SIGNUPS_PER_HOUR = 1
    _sign_up(Client(), "first")
    SignupAttempt.objects.update(created_at=timezone.now() - timedelta(minutes=50))
    response = _sign_up(Client(), "second")
    assert response.status_code == 429
    assert "Try again in 10 minutes." in response.content.decode()


def test_sign_ups_older_than_an_hour_no_longer_count_and_are_pruned(settings):
    settings.CHAT_SIGNUPS_PER_HOUR = 1
    _sign_up(Client(), "first")
    SignupAttempt.objects.update(created_at=timezone.now() - timedelta(minutes=61))
    assert _sign_up(Client(), "second").status_code == 302
    assert SignupAttempt.objects.count() == 1  # the old row went, the new one stays


def test_failed_sign_ups_do_not_count(settings):
    settings.CHAT_SIGNUPS_PER_HOUR = 1
    mismatched = {"username": "x", "password1": "a-long-passphrase-9", "password2": "no"}
    for _ in range(3):
        assert Client().post(reverse("signup"), mismatched).status_code == 200
    assert _sign_up(Client(), "real", address="127.0.0.1").status_code == 302


def test_no_sign_up_limit_when_it_is_zero(settings):
    settings.CHAT_SIGNUPS_PER_HOUR = 0
    for number in range(7):
        assert _sign_up(Client(), f"user{number}").status_code == 302
