"""One settings module, driven by environment variables with safe development defaults.

Every variable is documented in README.md.  Provider keys and endpoints are
not read here: the SDKs read their own variables (OPENAI_API_KEY,
OPENAI_BASE_URL, ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL) at call time.
"""

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    return float(value) if value.strip() else default


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = envbool("DJANGO_DEBUG", False)
# Set by the test suite (and the servers it starts): development secrets allowed.
TESTING = envbool("DJANGO_TESTING", "pytest" in sys.modules)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG and not TESTING:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off. "
            "Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    # Development and tests only: never used with DEBUG off in production.
    SECRET_KEY = "dev-insecure-secret-key-do-not-use-in-production"

ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "conversations",
    "axes",
]
# Development tools (devtools/: the fake provider, the benchmarks, their
# instrumentation): on by default with DJANGO_DEBUG and in tests, off in production.
CHAT_DEVTOOLS = envbool("CHAT_DEVTOOLS", DEBUG or TESTING)
if CHAT_DEVTOOLS:
    INSTALLED_APPS.append("devtools")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "chatsite.middleware.PrivateNoStoreMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "builtins": ["template_partials.templatetags.partials"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "conversations.context_processors.chat",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
# DATABASE_URL switches to PostgreSQL; the default is a SQLite file in WAL mode
# so that the final write of a streaming reply does not block readers.
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            # A file (not in-memory) test database, so that a live server in
            # another thread or process sees the same data.
            "TEST": {"NAME": str(BASE_DIR / "test-db.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer ----------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
# redis-py 8 defaults to a 5 s socket timeout, the same as channels-redis'
# blocking BZPOPMIN, so an idle consumer's read would time out and crash it;
# keep reads well above that.
REDIS_HOSTS = [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}]
CHAT_CHANNEL_LAYER = os.environ.get("CHAT_CHANNEL_LAYER", "pubsub").strip().lower()  # "pubsub" or "core"
CHAT_CHANNEL_CAPACITY = envint("CHAT_CHANNEL_CAPACITY", 1000)  # the "core" layer's per-channel queue
if REDIS_URL and CHAT_CHANNEL_LAYER == "core":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": REDIS_HOSTS,
                # group_send silently drops messages to a full channel; frames
                # are coalesced (at most ~20/s per conversation), so 1000 gives
                # a reader about 50 s of slack before anything is lost.
                "capacity": CHAT_CHANNEL_CAPACITY,
                "expiry": 60,
            },
        }
    }
elif REDIS_URL:
    # Redis pub/sub: a frame is one PUBLISH, delivered once to each worker that
    # has a socket of that conversation, which fans it out in memory.  The
    # list-based layer ("core") runs a script per socket per frame, and its
    # capacity holds for all of a process's sockets together: with
    # `manage.py benchscaleout --conversations 50` it dropped the final bubble
    # of 29 conversations out of 50, with 3-17 times the Redis commands
    # (docs/deployment.md).
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": REDIS_HOSTS}}
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "conversations.layers.InMemoryChannelLayer"}}

# --- Auth -------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
# django-axes: after CHAT_LOGIN_FAILURES wrong passwords for one username from
# one address, that pair is locked out for CHAT_LOGIN_COOLOFF_MINUTES (counted
# in the database, so every worker agrees); a success resets the count.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = envint("CHAT_LOGIN_FAILURES", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envfloat("CHAT_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "conversations.views.locked_out"
AXES_VERBOSE = False
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "login"
CHAT_SIGNUP = os.environ.get("CHAT_SIGNUP", "open").strip().lower()  # "open" or "closed"
# At most CHAT_SIGNUPS_PER_HOUR accounts are created from one client address
# (as django-axes sees it: REMOTE_ADDR, which daphne's --proxy-headers sets)
# in any hour, counted in the database; 0 for no limit.
CHAT_SIGNUPS_PER_HOUR = envint("CHAT_SIGNUPS_PER_HOUR", 5)

# --- I18n -------------------------------------------------------------------
LANGUAGE_CODE = os.environ.get("DJANGO_LANGUAGE_CODE", "en")
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files -----------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG and not TESTING
        else "django.contrib.staticfiles.storage.StaticFilesStorage",
    },
}
# Serve straight from the finders in development and tests (no collectstatic).
WHITENOISE_USE_FINDERS = DEBUG or TESTING

# --- Security ----------------------------------------------------------------
# DJANGO_HTTPS=1 (production behind TLS): redirect to https, secure cookies,
# HSTS, and trust X-Forwarded-Proto from the proxy in front.
HTTPS = envbool("DJANGO_HTTPS", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = envint("DJANGO_HSTS_SECONDS", 31536000) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
# Preloading is hard to undo, so it is the operator's explicit choice; its
# advisory deploy check is silenced rather than the header forced on.
SECURE_HSTS_PRELOAD = HTTPS and envbool("DJANGO_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# django-csp: scripts and styles from this site only (no inline script, style
# or attribute), images also as data: URLs, connections (the websocket
# included: 'self' covers ws:/wss: to this host) only to this site, never framed.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
SESSION_COOKIE_HTTPONLY = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        # The SDKs log request options at DEBUG; keep them quiet so a key
        # can never reach the log even with DJANGO_LOG_LEVEL=DEBUG.
        "openai": {"level": "WARNING"},
        "anthropic": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "axes": {"level": "WARNING"},  # a line per log-in otherwise; lockouts are warnings
    },
}

# --- Chat -------------------------------------------------------------------
# CHAT_MODELS: comma-separated provider:model[=Label] of the built-in endpoints
# openai (OPENAI_API_KEY, OPENAI_BASE_URL) and anthropic (ANTHROPIC_*); empty: defaults per key.
CHAT_MODELS = os.environ.get("CHAT_MODELS", "")
# CHAT_DEMO_MODEL: "1" always offer the offline demo model, "0" never,
# unset: offer it only when no provider key is configured.
CHAT_DEMO_MODEL = os.environ.get("CHAT_DEMO_MODEL", "")
CHAT_PROVIDER_MAX_RETRIES = envint("CHAT_PROVIDER_MAX_RETRIES", 2)
CHAT_PROVIDER_CONNECT_TIMEOUT = envfloat("CHAT_PROVIDER_CONNECT_TIMEOUT", 5.0)
CHAT_PROVIDER_READ_TIMEOUT = envfloat("CHAT_PROVIDER_READ_TIMEOUT", 60.0)
# Seconds to a stream's first event, per attempt, and for all attempts
# together (SDK retries included): a hung server fails within about a minute.
# Long-prefill local models may need more; 0 turns either off.
CHAT_PROVIDER_FIRST_BYTE_TIMEOUT = envfloat("CHAT_PROVIDER_FIRST_BYTE_TIMEOUT", 30.0)
CHAT_PROVIDER_TOTAL_TIMEOUT = envfloat("CHAT_PROVIDER_TOTAL_TIMEOUT", 60.0)
CHAT_MAX_MESSAGE_CHARS = envint("CHAT_MAX_MESSAGE_CHARS", 32000)
# Per user, across every worker (counted in the database): replies being
# written at once, and replies started in any 60 seconds.  0 turns a limit off.
CHAT_MAX_CONCURRENT_REPLIES = envint("CHAT_MAX_CONCURRENT_REPLIES", 3)
CHAT_REPLIES_PER_MINUTE = envint("CHAT_REPLIES_PER_MINUTE", 20)
# The longest system prompt a conversation may set (it is sent with every
# reply), and the most max_tokens a user may ask of a model without its own
# ``max_tokens_limit`` option.
CHAT_MAX_SYSTEM_PROMPT_CHARS = envint("CHAT_MAX_SYSTEM_PROMPT_CHARS", 16000)
CHAT_MAX_TOKENS_LIMIT = envint("CHAT_MAX_TOKENS_LIMIT", 32000)
# Conversations idle this many days are deleted by `manage.py purgeconversations`
# (run it from cron or a systemd timer); 0 keeps everything.
CHAT_RETENTION_DAYS = envfloat("CHAT_RETENTION_DAYS", 0)
# Temporary chats (conversations.temporary) end this long after their last tab
# closed (a reload rejoins within it), or after this long with nothing happening.
CHAT_TEMPORARY_GRACE_SECONDS = envfloat("CHAT_TEMPORARY_GRACE_SECONDS", 20.0)
CHAT_TEMPORARY_IDLE_MINUTES = envfloat("CHAT_TEMPORARY_IDLE_MINUTES", 30.0)
# Imports (conversations.imports): the largest file, and the most conversations one import takes.
CHAT_IMPORT_MAX_MB = envint("CHAT_IMPORT_MAX_MB", 50)
CHAT_IMPORT_MAX_CONVERSATIONS = envint("CHAT_IMPORT_MAX_CONVERSATIONS", 5000)
# Attachments (conversations.attachments): stored through the "attachments"
# storage below, never under MEDIA_ROOT or a public URL (a view checks the
# owner and serves each file).  By default files go under CHAT_UPLOAD_ROOT on
# this machine; with several workers on several machines, set
# CHAT_UPLOAD_STORAGE to another Django storage backend (django-storages'
# "storages.backends.s3.S3Storage") and CHAT_UPLOAD_STORAGE_OPTIONS to its
# options as JSON (see README.md, "Attachments").
CHAT_UPLOAD_ROOT = Path(os.environ.get("CHAT_UPLOAD_ROOT", "") or BASE_DIR / "private-uploads")
CHAT_UPLOAD_STORAGE = os.environ.get("CHAT_UPLOAD_STORAGE", "") or "conversations.attachments.PrivateStorage"
try:
    CHAT_UPLOAD_STORAGE_OPTIONS = json.loads(os.environ.get("CHAT_UPLOAD_STORAGE_OPTIONS", "") or "{}")
except ValueError as error:
    raise ImproperlyConfigured(f"CHAT_UPLOAD_STORAGE_OPTIONS is not JSON: {error}") from None
STORAGES["attachments"] = {"BACKEND": CHAT_UPLOAD_STORAGE, "OPTIONS": CHAT_UPLOAD_STORAGE_OPTIONS}
# Limits: per file, per message (the files waiting to be sent, together), per
# user (everything they keep), in MB; files per message; an image's pixels
# (checked before decoding) and longest side once stored (larger ones are
# shrunk); a document's characters of text and a PDF's pages.
CHAT_MAX_UPLOAD_MB = envfloat("CHAT_MAX_UPLOAD_MB", 10)
CHAT_MAX_MESSAGE_UPLOAD_MB = envfloat("CHAT_MAX_MESSAGE_UPLOAD_MB", 25)
CHAT_MAX_USER_UPLOAD_MB = envfloat("CHAT_MAX_USER_UPLOAD_MB", 500)
CHAT_MAX_UPLOADS_PER_MESSAGE = envint("CHAT_MAX_UPLOADS_PER_MESSAGE", 8)
CHAT_MAX_IMAGE_PIXELS = envint("CHAT_MAX_IMAGE_PIXELS", 50_000_000)
CHAT_MAX_IMAGE_SIDE = envint("CHAT_MAX_IMAGE_SIDE", 2048)
CHAT_MAX_DOCUMENT_CHARS = envint("CHAT_MAX_DOCUMENT_CHARS", 200_000)
CHAT_MAX_DOCUMENT_PAGES = envint("CHAT_MAX_DOCUMENT_PAGES", 500)
CHAT_FRAME_INTERVAL_MS = envint("CHAT_FRAME_INTERVAL_MS", 50)
# The HTTP API (conversations.api): a run it started keeps its events in
# memory this long after it ended, so a client reconnecting then gets exact replay.
CHAT_RUN_REPLAY_SECONDS = envfloat("CHAT_RUN_REPLAY_SECONDS", 60.0)
# A conversation page shows its newest CHAT_PAGE_MESSAGES messages; earlier
# ones load as the reader scrolls up (or all at once with ?all=1, without JavaScript).
CHAT_PAGE_MESSAGES = envint("CHAT_PAGE_MESSAGES", 100)
# "Share" makes a read-only snapshot behind an unguessable link: "off" (no
# button, every link 404s), "users" (a link opens for anyone logged in) or
# "links" (a link opens for anyone, without logging in).
CHAT_SHARING = os.environ.get("CHAT_SHARING", "off").strip().lower()
if CHAT_SHARING not in ("off", "users", "links"):
    raise ImproperlyConfigured(f"CHAT_SHARING must be off, users or links, not {CHAT_SHARING!r}")
# The most API keys in use (not revoked) one user may have, made on the
# settings page (conversations.models.ApiKey); 0 for no limit.
CHAT_MAX_API_KEYS = envint("CHAT_MAX_API_KEYS", 20)
CHAT_DEMO_TOKEN_DELAY_MS = envint("CHAT_DEMO_TOKEN_DELAY_MS", 30)
# CHAT_TITLE_MODEL: the model ("endpoint:model") that writes a conversation's
# title after its first reply; empty: the conversation's own model; "off":
# the first line of the first message stays the title.
CHAT_TITLE_MODEL = os.environ.get("CHAT_TITLE_MODEL", "")
CHAT_TITLE_TIMEOUT_SECONDS = envfloat("CHAT_TITLE_TIMEOUT_SECONDS", 20.0)
# CHAT_MODEL_OPTIONS: JSON {"endpoint:model": {option: value}} (see conversations.providers.catalog).
CHAT_MODEL_OPTIONS = os.environ.get("CHAT_MODEL_OPTIONS", "")
# More model endpoints (DeepSeek, Qwen, Ollama, a second OpenAI account...):
# CHAT_ENDPOINTS_FILE names a TOML (or .json) file of named endpoints, and
# CHAT_ENDPOINTS may hold the same as inline JSON; each names the variable
# holding its key, never the key (see conversations.providers.catalog and the
# README).  "models": "discover" lists an endpoint's models, asked again
# every CHAT_DISCOVERY_SECONDS.
CHAT_ENDPOINTS_FILE = os.environ.get("CHAT_ENDPOINTS_FILE", "")
CHAT_ENDPOINTS = os.environ.get("CHAT_ENDPOINTS", "")
CHAT_DISCOVERY_SECONDS = envfloat("CHAT_DISCOVERY_SECONDS", 300.0)
# Freeze start-up objects and raise the young-generation threshold (conversations.lifecycle).
CHAT_GC_TUNING = envbool("CHAT_GC_TUNING", True)
# Durability: while a reply streams, its text so far is written at most every
# CHAT_CHECKPOINT_SECONDS (one statement per worker for all its replies); every
# CHAT_HEARTBEAT_SECONDS a worker marks its replies alive and sweeps replies
# whose worker has been silent for CHAT_HEARTBEAT_TIMEOUT_SECONDS (it died):
# they become "interrupted", with their checkpointed text, and can be continued.
CHAT_CHECKPOINT_SECONDS = envfloat("CHAT_CHECKPOINT_SECONDS", 2.0)
CHAT_HEARTBEAT_SECONDS = envfloat("CHAT_HEARTBEAT_SECONDS", 10.0)
CHAT_HEARTBEAT_TIMEOUT_SECONDS = envfloat("CHAT_HEARTBEAT_TIMEOUT_SECONDS", 30.0)
# How long a write waits for the database's write lock (SQLite's one writer,
# a PostgreSQL lock) before it gives up: a send (refused, "try again", the text
# kept), and each background write (a checkpoint, skipped until the next tick;
# an attempt at a reply's final write, retried with backoff for
# CHAT_FINAL_SAVE_RETRY_SECONDS and then at every tick while the reply is kept).
CHAT_SEND_LOCK_SECONDS = envfloat("CHAT_SEND_LOCK_SECONDS", 5.0)
CHAT_WRITE_LOCK_SECONDS = envfloat("CHAT_WRITE_LOCK_SECONDS", 2.0)
CHAT_FINAL_SAVE_RETRY_SECONDS = envfloat("CHAT_FINAL_SAVE_RETRY_SECONDS", 60.0)
# A tab showing a reply being written that hears nothing of it for this long
# asks where it stands: its frames or final bubble may have been lost while
# Redis restarted.
CHAT_STREAM_SILENCE_SECONDS = envfloat("CHAT_STREAM_SILENCE_SECONDS", 10.0)
# Prices come from the model catalogue alone (built-in, or CHAT_MODEL_OPTIONS'
# price_in/price_out); the old second source is refused rather than ignored.
if os.environ.get("CHAT_MODEL_PRICES"):
    raise ImproperlyConfigured(
        "CHAT_MODEL_PRICES is no longer read: put prices in CHAT_MODEL_OPTIONS, e.g. "
        'CHAT_MODEL_OPTIONS=\'{"openai:gpt-4.1-mini": {"price_in": 0.40, "price_out": 1.60}}\' '
        "(USD per million input and output tokens)."
    )
# Benchmark instrumentation (devtools.instrumentation, only with CHAT_DEVTOOLS):
# at exit, this process writes its SQL write counts to CHAT_SQL_WRITES_FILE and
# its event-loop lags and GC pauses to CHAT_STALLS_FILE; empty: not measured.
CHAT_SQL_WRITES_FILE = os.environ.get("CHAT_SQL_WRITES_FILE", "")
CHAT_STALLS_FILE = os.environ.get("CHAT_STALLS_FILE", "")
CHAT_TRACEMALLOC_DIR = os.environ.get("CHAT_TRACEMALLOC_DIR", "")  # devtools: snapshots on SIGUSR1
