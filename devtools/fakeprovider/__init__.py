"""A fake model provider: one local HTTP server speaking both wire formats.

It answers the OpenAI Chat Completions API (``POST /v1/chat/completions``,
``GET /v1/models``) and the Anthropic Messages API (``POST /v1/messages``),
streaming and non-streaming, exactly as the real SDKs expect them, so the
provider code is tested through the real SDKs over real HTTP.  Standard
library only; it runs on its own event loop in its own thread::

    with FakeProvider(tokens=20, delay=0.005) as server:
        os.environ["OPENAI_BASE_URL"] = server.openai_base_url
        os.environ["ANTHROPIC_BASE_URL"] = server.anthropic_base_url
        ...
        server.requests          # what the clients sent (method, path, headers, json)
        server.wait_for_disconnect(1.0)  # True once a client hung up mid-response

Scenarios are chosen per request by the model name (``fake-<scenario>``, with
options: ``fake-long@tokens=500,delay=0.002``); ``scenarios`` lists them and
their grammar.  ``expected_text()`` and ``expected_reasoning()`` give the exact
text a scenario sends.

A "disconnect" is a client closing its connection while a response is in
progress (streaming, or waiting to send a non-streaming reply): a reader task
watches the socket for EOF during every response.  A response that ends
normally, or a connection the server closes itself, never counts.

The modules: ``scenarios`` (what a model name asks for), ``connection`` (HTTP
requests and responses on one connection), ``openai_format`` and
``anthropic_format`` (one wire format each), ``server`` (``FakeProvider``).
"""

from devtools.fakeprovider.anthropic_format import ANTHROPIC_ERRORS, SIGNATURE
from devtools.fakeprovider.openai_format import OPENAI_ERRORS
from devtools.fakeprovider.scenarios import (
    BASE_TOKENS,
    ERROR_MESSAGES,
    ERROR_STATUSES,
    REASONING_TOKENS,
    SCENARIOS,
    TOOL_ARGUMENTS,
    TOOL_NAME,
    Plan,
    count_words,
    expected_reasoning,
    expected_text,
    parse_model,
)
from devtools.fakeprovider.server import FakeProvider, RecordedRequest

__all__ = [
    "ANTHROPIC_ERRORS",
    "BASE_TOKENS",
    "ERROR_MESSAGES",
    "ERROR_STATUSES",
    "OPENAI_ERRORS",
    "REASONING_TOKENS",
    "SCENARIOS",
    "SIGNATURE",
    "TOOL_ARGUMENTS",
    "TOOL_NAME",
    "FakeProvider",
    "Plan",
    "RecordedRequest",
    "count_words",
    "expected_reasoning",
    "expected_text",
    "parse_model",
]
