"""The model catalogue: which models are offered, and every per-model setting.

Which models are offered
------------------------
``settings.CHAT_MODELS`` (from the environment variable of that name) is a
comma-separated list of ``provider:model[=Label]`` entries, e.g.::

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

A model is offered only while its provider's key is in the environment
(``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``; read at call time).  Local
servers that want no key still need OPENAI_API_KEY set to any value.

The offline demo model (``demo:demo``) is listed last: always when
``settings.CHAT_DEMO_MODEL`` is "1", never when it is "0", and otherwise only
when no other model is offered (e.g. no key is configured).

Per-model settings
------------------
``MODEL_SETTINGS``, keyed "provider:model", holds the label, default
``max_tokens``, ``thinking`` (ask for and show reasoning; Anthropic sends
``thinking_budget`` as budget_tokens), ``streaming`` (False: one
non-streaming call, e.g. for servers that cannot stream) and the prices in
USD per million input/output tokens (``price_in``/``price_out``, Decimal) for
the cost display.  Models not in the table get: their id as label, streaming,
no thinking, no price; Anthropic models without max_tokens then use the
provider's default (4096).

Operators override any of these without code through the optional
``CHAT_MODEL_OPTIONS`` environment variable (or setting of that name): a JSON
object keyed "provider:model", e.g.::

    CHAT_MODEL_OPTIONS='{"openai:o1": {"streaming": false},
                         "openai:deepseek-reasoner": {"thinking": true, "label": "DeepSeek R1"},
                         "anthropic:claude-sonnet-4-6": {"thinking": true, "thinking_budget": 4096,
                                                         "max_tokens": 16000, "price_in": "3", "price_out": "15"}}'

A label given in CHAT_MODELS wins over both.

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
import re
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext

from conversations.providers.anthropic import AnthropicProvider
from conversations.providers.base import ModelSpec, Provider
from conversations.providers.demo import DemoProvider
from conversations.providers.openai import OpenAIProvider

PROVIDERS: dict[str, Provider] = {
    "openai": OpenAIProvider(),
    "anthropic": AnthropicProvider(),
    "demo": DemoProvider(),
}
CONFIGURABLE_PROVIDERS = ("openai", "anthropic")  # the ones CHAT_MODELS may name

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
}
THINKING_STYLES = ("", "enable_thinking", "thinking_type")


# A model id's "@key=value,key=value" option list, and a comma-piece continuing one.
_OPTIONS = re.compile(r"@[A-Za-z_]\w*=[^=,]*(?:,[A-Za-z_]\w*=[^=,]*)*")
_OPTIONS_AT_END = re.compile(_OPTIONS.pattern + r"\s*$")
_OPTION_PIECE = re.compile(r"\s*[A-Za-z_]\w*=")


def get_provider(name: str) -> Provider:
    """The provider called ``name``; LookupError for an unknown one."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise LookupError(f"Unknown model provider {name!r}") from None


def offered_models() -> list[ModelSpec]:
    """The models to offer now, in picker order (demo last)."""
    options = _model_options()
    models = [
        _spec(provider, name, label, options)
        for provider, name, label in _configured_entries()
        if PROVIDERS[provider].is_configured()
    ]
    demo_setting = str(getattr(settings, "CHAT_DEMO_MODEL", "") or "").strip()
    if demo_setting == "1" or (demo_setting != "0" and not models):
        models.append(_spec("demo", "demo", "", options))
    return models


def prices() -> dict[str, tuple[Decimal, Decimal]]:
    """USD per million (input, output) tokens of every model with a price,
    offered now or not (old replies keep their cost): the built-in table and
    CHAT_MODEL_OPTIONS' ``price_in``/``price_out``, the one source of prices."""
    options = _model_options()
    table = {}
    for key in {*MODEL_SETTINGS, *options}:
        values = {**MODEL_SETTINGS.get(key, {}), **options.get(key, {})}
        if values.get("price_in") is not None and values.get("price_out") is not None:
            table[key] = (
                _decimal(key, "price_in", values["price_in"]),
                _decimal(key, "price_out", values["price_out"]),
            )
    return table


def get_model(key: str) -> ModelSpec | None:
    """The offered model with key "provider:model", or None when not offered."""
    return next((spec for spec in offered_models() if spec.key == key), None)


def default_model() -> ModelSpec | None:
    """The first offered model, or None when nothing is offered."""
    models = offered_models()
    return models[0] if models else None


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
    """CHAT_MODEL_OPTIONS, validated: {"provider:model": {field: value}}."""
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
        for name, value in values.items():
            if name not in _OPTION_TYPES:
                raise ImproperlyConfigured(
                    f"CHAT_MODEL_OPTIONS[{key!r}] has unknown option {name!r}; use: {', '.join(_OPTION_TYPES)}."
                )
            allowed = _OPTION_TYPES[name]
            # bool is an int subclass: max_tokens=true must not pass.
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise ImproperlyConfigured(f"CHAT_MODEL_OPTIONS[{key!r}][{name!r}] has the wrong type: {value!r}.")
            if name == "thinking_style" and value not in THINKING_STYLES:
                raise ImproperlyConfigured(
                    f"CHAT_MODEL_OPTIONS[{key!r}]['thinking_style'] must be one of {', '.join(THINKING_STYLES[1:])}."
                )
    return options


def _spec(provider: str, name: str, label: str, options: dict[str, dict]) -> ModelSpec:
    key = f"{provider}:{name}"
    values = {**MODEL_SETTINGS.get(key, {}), **options.get(key, {})}
    for price in ("price_in", "price_out"):
        if values.get(price) is not None:
            values[price] = _decimal(key, price, values[price])
    default_label = gettext("Demo (offline)") if provider == "demo" else name
    label = label or values.pop("label", None) or default_label
    values.pop("label", None)
    return ModelSpec(provider=provider, name=name, label=label, **values)


def _decimal(key: str, name: str, value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ImproperlyConfigured(f"CHAT_MODEL_OPTIONS[{key!r}][{name!r}] is not a number: {value!r}.") from None
