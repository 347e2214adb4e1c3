"""Model providers and the catalogue of offered models.

Callers use these five functions and the types in ``base``:

* ``get_provider(name) -> Provider`` ("openai", "anthropic", "demo");
* ``offered_models() -> list[ModelSpec]``: what the picker shows, in order;
* ``get_model(key) -> ModelSpec | None``: an offered model by "endpoint:model";
* ``default_model() -> ModelSpec | None``: the first offered model;
* ``prices()``: USD per million tokens of every priced model, offered or not.

Configuration (CHAT_MODELS, CHAT_ENDPOINTS_FILE, CHAT_ENDPOINTS,
CHAT_MODEL_OPTIONS, CHAT_DEMO_MODEL, provider keys) is documented in
``catalog``; ``catalog.configured_endpoints()`` and
``catalog.refresh_discovered()`` serve ``manage.py checkproviders``.
"""

from conversations.providers.catalog import default_model, get_model, get_provider, offered_models, prices

__all__ = ["default_model", "get_model", "get_provider", "offered_models", "prices"]
