"""The model catalogue: which models are offered, and every per-model setting.

Which models are offered
------------------------
``settings.CHAT_MODELS`` (from the environment variable of that name) lists
the models of the two built-in endpoints, ``openai`` and ``anthropic``, as
comma-separated ``provider:model[=Label]`` entries, e.g.::

    CHAT_MODELS=openai:gpt-4.1-mini,anthropic:claude-sonnet-4-6=Claude Sonnet 4.6,openai:llama3.1:8b=Llama

The provider is ``openai`` (also every OpenAI-compatible server: DeepSeek,
Ollama, vLLM, llama.cpp, LM Studio, OpenRouter) or ``anthropic``; only the
first colon separates it, so model ids may contain colons.  Labels cannot
contain commas.  A model id may end in an ``@key=value[,key=value]`` option
list (the fake provider's scenario names, e.g. ``openai:fake-long@tokens=500,delay=0``);
its ``=`` and ``,`` belong to the id, and a label may follow it
(``openai:fake-long@tokens=500=Long``).  A bad entry raises
ImproperlyConfigured naming it.  Without CHAT_MODELS, each provider whose
key is set offers its ``DEFAULT_MODELS``.

A built-in endpoint's model is offered only while its key is in the
environment (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``; read at call time),
so a keyless local server reached through OPENAI_BASE_URL still needs
OPENAI_API_KEY set to any value (an endpoints table without ``key_env``
does not).

The offline demo model (``demo:demo``) is listed last: always when
``settings.CHAT_DEMO_MODEL`` is "1", never when it is "0", and otherwise only
when no other model is offered (e.g. no key is configured).

More endpoints
--------------
``CHAT_ENDPOINTS_FILE`` names a TOML file (or JSON, by its extension), and
``CHAT_ENDPOINTS`` may hold the same as inline JSON: one table per named
endpoint, each a server speaking one of the two wire formats::

    [deepseek]
    kind = "openai"                          # "openai" (any compatible server) or "anthropic"
    base_url = "https://api.deepseek.com/v1"
    key_env = "DEEPSEEK_API_KEY"             # the variable's NAME; leave out for keyless servers
    headers = { "X-Title" = "Chat" }         # optional; "${NAME}" in a value reads that variable
    models = ["deepseek-chat", { id = "deepseek-reasoner", label = "DeepSeek R1", thinking = true }]

``models`` lists ids or tables of an ``id`` and the per-model options below,
or is ``"discover"``: the endpoint's own list (``GET {base_url}/models``),
kept in Django's cache and fetched again in the background after
``CHAT_DISCOVERY_SECONDS`` (``manage.py checkproviders --refresh`` fetches
it at once).  Names are ``[a-z0-9_-]``, at most 50 characters; a model's
key is "endpoint:model", and each reply stores its endpoint's name.  The
built-in endpoints ``openai`` and ``anthropic`` come from the variables
above (and CHAT_MODELS); an endpoints table of that name replaces one
(CHAT_MODELS may then not list its models).  An endpoint's models are
offered only while its key variable is set (or it names none).  A model
whose endpoint is gone is no longer offered: its conversations stay
readable and can switch to another model.

Per-model settings
------------------
``MODEL_SETTINGS``, keyed "endpoint:model", holds the label, default
``max_tokens``, ``thinking`` (ask for and show reasoning; Anthropic sends
``thinking_budget`` as budget_tokens), ``streaming`` (False: one
non-streaming call, e.g. for servers that cannot stream), ``vision``
(takes images; unset: ``ModelSpec.accepts_images`` guesses) and the prices in
USD per million input/output tokens (``price_in``/``price_out``, Decimal) for
the cost display.  Models not in the table get: their id as label, streaming,
no thinking, no price; Anthropic models without max_tokens then use the
provider's default (4096).

Operators override any of these without code through the optional
``CHAT_MODEL_OPTIONS`` environment variable (or setting of that name): a JSON
object keyed "endpoint:model" (for every endpoint), e.g.::

    CHAT_MODEL_OPTIONS='{"openai:o1": {"streaming": false},
                         "openai:deepseek-reasoner": {"thinking": true, "label": "DeepSeek R1"},
                         "anthropic:claude-sonnet-4-6": {"thinking": true, "thinking_budget": 4096,
                                                         "max_tokens": 16000, "price_in": "3", "price_out": "15"}}'

A label given in CHAT_MODELS wins over both; CHAT_MODEL_OPTIONS wins over an
endpoints file's model table.

Thinking differs per model family on OpenAI-compatible servers, so it is per
model too (``providers/openai.py`` sends them):

- DeepSeek (``deepseek-reasoner``): ``{"thinking": true}`` only shows its
  ``reasoning_content``; the model thinks unasked.  Its reasoning is never
  sent back (DeepSeek rejects it in ordinary turns; this chat has no tools).
- Qwen on DashScope or vLLM: ``{"thinking": true, "thinking_style":
  "enable_thinking"}`` sends ``enable_thinking`` (true or false) and the
  ``thinking_budget``; ``false`` with the style turns a hybrid model's
  thinking off.
- Kimi, GLM: ``"thinking_style": "thinking_type"`` sends ``thinking:
  {"type": "enabled"}`` (or ``"disabled"``).
- OpenAI o-series and gpt-5 (guessed from the name, or ``"reasoning_model":
  true/false``): ``max_completion_tokens`` instead of ``max_tokens``, no
  temperature, and ``reasoning_effort`` when set.
- ``extra_body``: any other fields the server wants, merged into the body
  (e.g. vLLM's ``{"chat_template_kwargs": {"enable_thinking": false}}``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext

from conversations.providers.anthropic import AnthropicProvider
from conversations.providers.base import Endpoint, ModelSpec, Provider, ProviderError
from conversations.providers.demo import DemoProvider
from conversations.providers.openai import OpenAIProvider

PROVIDERS: dict[str, Provider] = {
    "openai": OpenAIProvider(),
    "anthropic": AnthropicProvider(),
    "demo": DemoProvider(),
}
CONFIGURABLE_PROVIDERS = ("openai", "anthropic")  # the ones CHAT_MODELS may name, and the kinds

logger = logging.getLogger(__name__)

# Offered, in this order, for each provider whose key is set when CHAT_MODELS is empty.
# (claude-sonnet-4-5 reaches end-of-life on 2026-11-30, hence 4-6.)
DEFAULT_MODELS = {
    "openai": ["gpt-4.1-mini", "gpt-4.1", "gpt-4o-mini"],
    "anthropic": ["claude-sonnet-4-6", "claude-haiku-4-5"],
}

MODEL_SETTINGS: dict[str, dict] = {
    "openai:gpt-4.1-mini": {"label": "GPT-4.1 mini", "price_in": Decimal("0.40"), "price_out": Decimal("1.60")},
    "openai:gpt-4.1": {"label": "GPT-4.1", "price_in": Decimal("2.00"), "price_out": Decimal("8.00")},
    "openai:gpt-4o-mini": {"label": "GPT-4o mini", "price_in": Decimal("0.15"), "price_out": Decimal("0.60")},
    "anthropic:claude-sonnet-4-6": {
        "label": "Claude Sonnet 4.6",
        "max_tokens": 8192,
        "price_in": Decimal("3"),
        "price_out": Decimal("15"),
    },
    "anthropic:claude-haiku-4-5": {
        "label": "Claude Haiku 4.5",
        "max_tokens": 8192,
        "price_in": Decimal("1"),
        "price_out": Decimal("5"),
    },
    "demo:demo": {"price_in": Decimal("0"), "price_out": Decimal("0")},
}

_OPTION_TYPES = {
    "label": (str,),
    "max_tokens": (int, type(None)),
    "thinking": (bool,),
    "thinking_budget": (int, type(None)),
    "streaming": (bool,),
    "price_in": (int, float, str, type(None)),
    "price_out": (int, float, str, type(None)),
    "thinking_style": (str,),
    "reasoning_model": (bool, type(None)),
    "reasoning_effort": (str, type(None)),
    "extra_body": (dict, type(None)),
    "max_tokens_limit": (int, type(None)),
    "vision": (bool, type(None)),
}
THINKING_STYLES = ("", "enable_thinking", "thinking_type")


# A model id's "@key=value,key=value" option list, and a comma-piece continuing one.
_OPTIONS = re.compile(r"@[A-Za-z_]\w*=[^=,]*(?:,[A-Za-z_]\w*=[^=,]*)*")
_OPTIONS_AT_END = re.compile(_OPTIONS.pattern + r"\s*$")
_OPTION_PIECE = re.compile(r"\s*[A-Za-z_]\w*=")

_ENDPOINT_NAME = re.compile(r"[a-z0-9_-]{1,50}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENDPOINT_FIELDS = ("kind", "base_url", "key_env", "headers", "models")
DISCOVER = "discover"


@dataclass(frozen=True)
class ConfiguredEndpoint:
    """An endpoint as configured: its models (id, label, options), or None to discover them."""

    endpoint: Endpoint
    models: tuple[tuple[str, str, dict], ...] | None


def get_provider(name: str) -> Provider:
    """The provider called ``name``; LookupError for an unknown one."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise LookupError(f"Unknown model provider {name!r}") from None


def offered_models() -> list[ModelSpec]:
    """The models to offer now, in picker order: the built-in endpoints'
    (CHAT_MODELS order), then each configured endpoint's, then the demo."""
    options = _model_options()
    models = [
        _spec(endpoint, name, label, {}, options)
        for endpoint, name, label in _builtin_entries()
        if endpoint.is_available()
    ]
    for configured in configured_endpoints():
        if configured.endpoint.is_available():
            for name, label, values in endpoint_models(configured):
                models.append(_spec(configured.endpoint, name, label, values, options))
    demo_setting = str(getattr(settings, "CHAT_DEMO_MODEL", "") or "").strip()
    if demo_setting == "1" or (demo_setting != "0" and not models):
        models.append(_spec(PROVIDERS["demo"].default_endpoint(), "demo", "", {}, options))
    return models


def prices() -> dict[str, tuple[Decimal, Decimal]]:
    """USD per million (input, output) tokens of every model with a price,
    offered now or not (old replies keep their cost): the built-in table, the
    endpoints' model tables and CHAT_MODEL_OPTIONS' ``price_in``/``price_out``."""
    options = _model_options()
    tables = {
        f"{configured.endpoint.name}:{name}": values
        for configured in configured_endpoints()
        for name, _label, values in configured.models or ()
    }
    table = {}
    for key in {*MODEL_SETTINGS, *tables, *options}:
        values = {**MODEL_SETTINGS.get(key, {}), **tables.get(key, {}), **options.get(key, {})}
        if values.get("price_in") is not None and values.get("price_out") is not None:
            table[key] = (
                _decimal(key, "price_in", values["price_in"]),
                _decimal(key, "price_out", values["price_out"]),
            )
    return table


def all_endpoints() -> list[ConfiguredEndpoint]:
    """Every endpoint with a model to offer, key set or not: the built-in ones
    (with CHAT_MODELS' models, or the defaults), then the configured ones."""
    builtin: dict[str, tuple[Endpoint, list]] = {}
    for endpoint, name, label in _builtin_entries():
        builtin.setdefault(endpoint.name, (endpoint, []))[1].append((name, label, {}))
    return [ConfiguredEndpoint(endpoint, tuple(models)) for endpoint, models in builtin.values()] + (
        configured_endpoints()
    )


def configured_endpoints() -> list[ConfiguredEndpoint]:
    """The endpoints of CHAT_ENDPOINTS_FILE, then of CHAT_ENDPOINTS, validated."""
    inline = settings.CHAT_ENDPOINTS or ""
    path = str(settings.CHAT_ENDPOINTS_FILE or "").strip()
    try:
        mtime = os.stat(path).st_mtime_ns if path else None
    except OSError as exc:
        raise ImproperlyConfigured(f"CHAT_ENDPOINTS_FILE {path!r} cannot be read: {exc.strerror}.") from None
    cache_key = (json.dumps(inline, sort_keys=True) if isinstance(inline, dict) else inline, path, mtime)
    if _parsed[0] != cache_key:
        tables: list[tuple[str, dict]] = []
        if path:
            tables.append((f"CHAT_ENDPOINTS_FILE {path!r}", _read_endpoints_file(Path(path))))
        if isinstance(inline, dict) or inline.strip():
            tables.append(("CHAT_ENDPOINTS", _json_object("CHAT_ENDPOINTS", inline)))
        endpoints: dict[str, ConfiguredEndpoint] = {}
        for source, table in tables:
            for name, fields in table.items():
                if name in endpoints:
                    raise ImproperlyConfigured(f"{source} defines endpoint {name!r} a second time.")
                endpoints[name] = _endpoint(source, name, fields)
        _parsed[:] = [cache_key, list(endpoints.values())]
    return list(_parsed[1])


_parsed: list = [None, []]  # (the settings and file version parsed, its endpoints)


def endpoint_models(configured: ConfiguredEndpoint) -> list[tuple[str, str, dict]]:
    """(id, label, options) of the endpoint's models: as configured, or as it
    last listed them (a stale or missing list is fetched again in the background)."""
    if configured.models is not None:
        return list(configured.models)
    found = cache.get(_discovery_key(configured.endpoint))
    if found is None or time.time() - found[0] > settings.CHAT_DISCOVERY_SECONDS:
        _refresh_soon(configured.endpoint)
    return [(name, "", {}) for name in (found[1] if found else ())]


def refresh_discovered(endpoint: Endpoint) -> list[str]:
    """Ask ``endpoint`` for its models now and remember them (blocking; never
    call it on the event loop).  Raises ProviderError; the old list is kept."""
    names = get_provider(endpoint.kind).list_models(endpoint)
    cache.set(_discovery_key(endpoint), (time.time(), names), None)
    return names


_refreshing: set[str] = set()
_refreshing_lock = threading.Lock()


def _refresh_soon(endpoint: Endpoint) -> None:
    """``refresh_discovered`` in a thread of its own, once at a time per endpoint:
    the page asking must not wait for another server."""
    key = _discovery_key(endpoint)
    with _refreshing_lock:
        if key in _refreshing:
            return
        _refreshing.add(key)

    def run() -> None:
        try:
            refresh_discovered(endpoint)
        except ProviderError as exc:
            logger.warning("could not list the models of endpoint %s: %s (%s)", endpoint.name, exc.message, exc.detail)
            old = cache.get(key)
            cache.set(key, (time.time(), old[1] if old else []), None)  # try again after CHAT_DISCOVERY_SECONDS
        finally:
            with _refreshing_lock:
                _refreshing.discard(key)

    threading.Thread(target=run, name=f"discover-{endpoint.name}", daemon=True).start()


def _discovery_key(endpoint: Endpoint) -> str:
    return f"chat:discovered-models:{endpoint.name}:{endpoint.base_url}"


def _read_endpoints_file(path: Path) -> dict:
    source = f"CHAT_ENDPOINTS_FILE {str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ImproperlyConfigured(f"{source} cannot be read: {exc.strerror}.") from None
    if path.suffix.lower() == ".json":
        return _json_object(source, text)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ImproperlyConfigured(f"{source} is not valid TOML: {exc}") from None


def _json_object(source: str, raw: str | dict) -> dict:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f'{source} must be an object of endpoints, like {{"ollama": {{...}}}}.')
    return value


def _endpoint(source: str, name: str, fields: object) -> ConfiguredEndpoint:
    where = f"{source}, endpoint {name!r}"
    if not _ENDPOINT_NAME.fullmatch(name) or name == "demo":
        raise ImproperlyConfigured(f"{where}: a name is up to 50 of a-z, 0-9, _ and - (and not demo).")
    if not isinstance(fields, dict):
        raise ImproperlyConfigured(f"{where} must be a table.")
    unknown = set(fields) - set(_ENDPOINT_FIELDS)
    if unknown:
        raise ImproperlyConfigured(f"{where} has unknown fields {sorted(unknown)}; use: {', '.join(_ENDPOINT_FIELDS)}.")
    kind = fields.get("kind")
    if kind not in CONFIGURABLE_PROVIDERS:
        raise ImproperlyConfigured(f"{where}: kind must be one of {', '.join(CONFIGURABLE_PROVIDERS)}, not {kind!r}.")
    base_url = fields.get("base_url")
    if not isinstance(base_url, str) or not base_url.strip().startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"{where}: base_url must be an http(s) URL, not {base_url!r}.")
    key_env = fields.get("key_env", "")
    if not isinstance(key_env, str) or (key_env and not _ENV_NAME.fullmatch(key_env)):
        raise ImproperlyConfigured(
            f"{where}: key_env is the NAME of the environment variable holding the key, not {key_env!r}."
        )
    headers = fields.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ImproperlyConfigured(f"{where}: headers must be a table of strings.")
    endpoint = Endpoint(name, kind, base_url.strip().rstrip("/"), key_env, tuple(headers.items()))
    models = fields.get("models")
    if models == DISCOVER:
        return ConfiguredEndpoint(endpoint, None)
    if not isinstance(models, list) or not models:
        raise ImproperlyConfigured(f'{where}: models must be a list of model ids or tables, or "discover".')
    entries, seen = [], set()
    for model in models:
        if isinstance(model, str):
            model = {"id": model}
        if not isinstance(model, dict) or not isinstance(model.get("id"), str) or not model["id"].strip():
            raise ImproperlyConfigured(f"{where}: each model is an id or a table with an id, not {model!r}.")
        values = {k: v for k, v in model.items() if k != "id"}
        _check_options(f"{where}, model {model['id']!r}", values)
        label = values.pop("label", "")
        if model["id"].strip() not in seen:
            seen.add(model["id"].strip())
            entries.append((model["id"].strip(), label, values))
    return ConfiguredEndpoint(endpoint, tuple(entries))


def get_model(key: str) -> ModelSpec | None:
    """The offered model with key "endpoint:model", or None when not offered."""
    return next((spec for spec in offered_models() if spec.key == key), None)


def default_model() -> ModelSpec | None:
    """The first offered model, or None when nothing is offered."""
    models = offered_models()
    return models[0] if models else None


def _builtin_entries() -> list[tuple[Endpoint, str, str]]:
    """(endpoint, model, label) of the built-in endpoints an endpoints table does not replace."""
    replaced = {configured.endpoint.name for configured in configured_endpoints()}
    explicit = bool(str(getattr(settings, "CHAT_MODELS", "") or "").strip())
    entries = []
    for provider, name, label in _configured_entries():
        if provider in replaced:
            if explicit:
                raise ImproperlyConfigured(
                    f"CHAT_MODELS lists {provider}:{name}, but endpoint {provider!r} is defined in "
                    "CHAT_ENDPOINTS_FILE/CHAT_ENDPOINTS: list its models there."
                )
            continue
        entries.append((PROVIDERS[provider].default_endpoint(), name, label))
    return entries


def _configured_entries() -> list[tuple[str, str, str]]:
    """(provider, model, label) from CHAT_MODELS, or the defaults; label "" when none given."""
    raw = str(getattr(settings, "CHAT_MODELS", "") or "")
    if not raw.strip():
        return [(provider, name, "") for provider, names in DEFAULT_MODELS.items() for name in names]
    entries, seen = [], set()
    for entry in _split_entries(raw):
        provider, name, label = _parse_entry(entry)
        if (provider, name) not in seen:
            seen.add((provider, name))
            entries.append((provider, name, label))
    return entries


def _split_entries(raw: str) -> list[str]:
    """CHAT_MODELS split at its commas, except those inside a model's @options."""
    entries: list[str] = []
    for piece in raw.split(","):
        if entries and _OPTION_PIECE.match(piece) and _OPTIONS_AT_END.search(entries[-1]):
            entries[-1] += "," + piece
        else:
            entries.append(piece)
    return [entry.strip() for entry in entries if entry.strip()]


def _parse_entry(entry: str) -> tuple[str, str, str]:
    provider, colon, rest = entry.partition(":")
    # The label starts at the first "=" that is not inside the model's @options.
    options = _OPTIONS.search(rest)
    start = options.end() if options and "=" not in rest[: options.start()] else 0
    separator = rest.find("=", start)
    name, label = (rest, "") if separator < 0 else (rest[:separator], rest[separator + 1 :])
    provider, name = provider.strip(), name.strip()
    if not colon or not provider or not name:
        raise ImproperlyConfigured(f"CHAT_MODELS entry {entry!r} must look like provider:model[=Label].")
    if provider == "demo":
        raise ImproperlyConfigured(
            f"CHAT_MODELS entry {entry!r}: the demo model is controlled by CHAT_DEMO_MODEL=1, not CHAT_MODELS."
        )
    if provider not in CONFIGURABLE_PROVIDERS:
        raise ImproperlyConfigured(
            f"CHAT_MODELS entry {entry!r} names unknown provider {provider!r}; "
            f"use one of: {', '.join(CONFIGURABLE_PROVIDERS)}."
        )
    return provider, name, label.strip()


def _model_options() -> dict[str, dict]:
    """CHAT_MODEL_OPTIONS, validated: {"endpoint:model": {field: value}}."""
    raw = settings.CHAT_MODEL_OPTIONS or ""
    if isinstance(raw, dict):
        options = raw
    elif not str(raw).strip():
        return {}
    else:
        try:
            options = json.loads(raw)
        except ValueError as exc:
            raise ImproperlyConfigured(f"CHAT_MODEL_OPTIONS is not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise ImproperlyConfigured('CHAT_MODEL_OPTIONS must be a JSON object like {"openai:o1": {"streaming": false}}.')
    for key, values in options.items():
        if not isinstance(values, dict):
            raise ImproperlyConfigured(f"CHAT_MODEL_OPTIONS[{key!r}] must be an object.")
        _check_options(f"CHAT_MODEL_OPTIONS[{key!r}]", values)
    return options


def _check_options(where: str, values: dict) -> None:
    for name, value in values.items():
        if name not in _OPTION_TYPES:
            raise ImproperlyConfigured(f"{where} has unknown option {name!r}; use: {', '.join(_OPTION_TYPES)}.")
        allowed = _OPTION_TYPES[name]
        # bool is an int subclass: max_tokens=true must not pass.
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ImproperlyConfigured(f"{where}[{name!r}] has the wrong type: {value!r}.")
        if name == "thinking_style" and value not in THINKING_STYLES:
            raise ImproperlyConfigured(f"{where}['thinking_style'] must be one of {', '.join(THINKING_STYLES[1:])}.")


def _spec(endpoint: Endpoint, name: str, label: str, table: dict, options: dict[str, dict]) -> ModelSpec:
    key = f"{endpoint.name}:{name}"
    values = {**MODEL_SETTINGS.get(key, {}), **table, **options.get(key, {})}
    for price in ("price_in", "price_out"):
        if values.get(price) is not None:
            values[price] = _decimal(key, price, values[price])
    default_label = gettext("Demo (offline)") if endpoint.kind == "demo" else name
    label = label or values.pop("label", None) or default_label
    values.pop("label", None)
    return ModelSpec(provider=endpoint.kind, name=name, label=label, endpoint=endpoint, **values)


def _decimal(key: str, name: str, value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ImproperlyConfigured(f"CHAT_MODEL_OPTIONS[{key!r}][{name!r}] is not a number: {value!r}.") from None
