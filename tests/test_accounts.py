import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

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
