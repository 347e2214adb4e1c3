"""Settings come from the environment; each case runs in a fresh interpreter."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps({'engine': settings.DATABASES['default']['ENGINE'], "
    "'layer': settings.CHANNEL_LAYERS['default']['BACKEND'], 'debug': settings.DEBUG}))"
)


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL"))}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "chatsite.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _probe(env: dict) -> dict:
    result = _run({"DJANGO_TESTING": "1", **env}, "-c", PROBE)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_it_defaults_to_sqlite_and_the_in_memory_layer():
    found = _probe({})
    assert found["engine"] == "django.db.backends.sqlite3"
    assert found["layer"] == "conversations.layers.InMemoryChannelLayer"
    assert found["debug"] is False


def test_it_switches_to_postgresql_and_redis():
    found = _probe({"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/x", "REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert found["engine"] == "django.db.backends.postgresql"
    assert found["layer"] == "channels_redis.pubsub.RedisPubSubChannelLayer"


def test_it_offers_the_list_based_redis_layer():
    found = _probe({"REDIS_URL": "redis://127.0.0.1:6379/0", "CHAT_CHANNEL_LAYER": "core"})
    assert found["layer"] == "channels_redis.core.RedisChannelLayer"


def test_it_refuses_to_start_without_a_secret_key_when_debug_is_off():
    result = _run({"DJANGO_DEBUG": "0", "DJANGO_TESTING": "0"}, "-c", PROBE)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_it_refuses_to_start_with_prices_in_the_old_setting():
    result = _run({"DJANGO_TESTING": "1", "CHAT_MODEL_PRICES": '{"openai:gpt-4.1-mini": [0.4, 1.6]}'}, "-c", PROBE)
    assert result.returncode != 0
    assert "ImproperlyConfigured: CHAT_MODEL_PRICES is no longer read" in result.stderr
    assert '"price_in": 0.40, "price_out": 1.60' in result.stderr  # the example says where prices go


@pytest.mark.parametrize("debug", ["1"])
def test_it_starts_in_debug_without_a_secret_key(debug):
    assert _probe({"DJANGO_DEBUG": debug, "DJANGO_TESTING": "0"})["debug"] is True


def test_it_passes_the_deployment_checks_with_the_production_variables():
    env = {
        "DJANGO_TESTING": "0",
        "DJANGO_SECRET_KEY": "x" * 20 + "a-very-long-and-random-production-secret-key-0123456789",
        "DJANGO_ALLOWED_HOSTS": "chat.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
        "DJANGO_HTTPS": "1",
    }
    result = _run(env, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


# Settings only, no django.setup(): the S3 backend is not installed here.
STORAGE_PROBE = (
    "import json; from django.conf import settings; "
    "print(json.dumps({'storage': settings.STORAGES['attachments'], 'root': str(settings.CHAT_UPLOAD_ROOT), "
    "'media': str(settings.MEDIA_ROOT)}))"
)


def test_attachments_default_to_a_private_directory_outside_media_and_static():
    result = _run({"DJANGO_TESTING": "1"}, "-c", STORAGE_PROBE)
    found = json.loads(result.stdout)
    assert found["storage"] == {"BACKEND": "conversations.attachments.PrivateStorage", "OPTIONS": {}}
    assert found["root"] == str(ROOT / "private-uploads")


def test_attachments_take_another_storage_and_its_options_from_the_environment():
    options = {"bucket_name": "chat-uploads", "default_acl": "private"}
    env = {"CHAT_UPLOAD_STORAGE": "storages.backends.s3.S3Storage", "CHAT_UPLOAD_STORAGE_OPTIONS": json.dumps(options)}
    result = _run({"DJANGO_TESTING": "1", **env}, "-c", STORAGE_PROBE)
    assert json.loads(result.stdout)["storage"] == {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}


def test_it_refuses_storage_options_that_are_not_json():
    result = _run({"DJANGO_TESTING": "1", "CHAT_UPLOAD_STORAGE_OPTIONS": "{bucket"}, "-c", STORAGE_PROBE)
    assert result.returncode != 0
    assert "CHAT_UPLOAD_STORAGE_OPTIONS is not JSON" in result.stderr
