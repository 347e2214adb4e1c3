"""The fake provider server itself: its wire formats, recording and disconnect detection.

Read with plain http.client / sockets, so these tests see the raw bytes the
SDKs would see.
"""

import http.client
import io
import json
import re
import socket
import threading

import pytest
from django.core.management import call_command

from devtools.fakeprovider import (
    BASE_TOKENS,
    REASONING_TOKENS,
    SCENARIOS,
    FakeProvider,
    count_words,
    expected_reasoning,
    expected_text,
    parse_model,
)
from devtools.management.commands.fakeprovider import Command as FakeProviderCommand
from tests import fakes

fake_server = fakes.fake_server
KEY = "any-key"


@pytest.fixture
def server(fake_server):
    fake_server.clear()
    return fake_server


def post(server, path, body, headers=None, connection=None):
    """(status, headers, raw body) of one request; ``connection`` to reuse one."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    payload = json.dumps(body)
    conn.request("POST", path, payload, {"content-type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    if connection is None:
        conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def openai_post(server, body, **kwargs):
    return post(server, "/v1/chat/completions", body, {"authorization": f"Bearer {KEY}"}, **kwargs)


def anthropic_post(server, body, **kwargs):
    return post(server, "/v1/messages", body, {"x-api-key": KEY, "anthropic-version": "2023-06-01"}, **kwargs)


def sse_blocks(raw: bytes) -> list[list[str]]:
    return [block.split("\n") for block in raw.decode().split("\n\n") if block]


def messages(text="Hello there"):
    return [{"role": "user", "content": text}]


# --- OpenAI wire format ---------------------------------------------------------


def test_openai_chunks_carry_id_object_created_and_model(server):
    body = {"model": "fake-normal", "stream": True, "stream_options": {"include_usage": True}, "messages": messages()}

    status, headers, raw = openai_post(server, body)

    blocks = sse_blocks(raw)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["transfer-encoding"] == "chunked"
    assert all(len(block) == 1 and block[0].startswith("data: ") for block in blocks)  # no event: lines
    assert blocks[-1] == ["data: [DONE]"]
    chunks = [json.loads(block[0][len("data: ") :]) for block in blocks[:-1]]
    assert {(c["id"], c["object"], c["created"], c["model"]) for c in chunks} == {
        (chunks[0]["id"], "chat.completion.chunk", chunks[0]["created"], "fake-normal")
    }
    with_choices = [c for c in chunks if c["choices"]]
    assert all(
        set(c["choices"][0]) == {"index", "delta", "finish_reason", "logprobs"} and c["choices"][0]["logprobs"] is None
        for c in with_choices
    )
    assert with_choices[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in with_choices) == expected_text("fake-normal")
    assert with_choices[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 20, "total_tokens": 22}


def test_openai_streams_have_no_usage_chunk_unless_asked(server):
    _, _, raw = openai_post(server, {"model": "fake-normal", "stream": True, "messages": messages()})

    chunks = [json.loads(b[0][len("data: ") :]) for b in sse_blocks(raw)[:-1]]
    assert all(c["choices"] and "usage" not in c for c in chunks)


def test_openai_reasoning_comes_as_reasoning_content_deltas_first(server):
    _, _, raw = openai_post(server, {"model": "fake-reasoning", "stream": True, "messages": messages()})

    deltas = [json.loads(b[0][len("data: ") :])["choices"][0]["delta"] for b in sse_blocks(raw)[:-1]]
    reasoning = [d["reasoning_content"] for d in deltas if d.get("reasoning_content")]
    assert reasoning == list(REASONING_TOKENS)
    assert deltas.index(next(d for d in deltas if d.get("content"))) > len(reasoning)


def test_an_openai_midstream_error_is_a_data_error_frame(server):
    _, _, raw = openai_post(server, {"model": "fake-midstream-error", "stream": True, "messages": messages()})

    last = json.loads(sse_blocks(raw)[-1][0][len("data: ") :])
    assert set(last["error"]) == {"message", "type", "param", "code"}


def test_a_non_streaming_openai_reply_is_one_chat_completion(server):
    status, _, raw = openai_post(server, {"model": "fake-length", "messages": messages()})

    completion = json.loads(raw)
    assert status == 200 and completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"] == {
        "role": "assistant",
        "content": expected_text("fake-length"),
        "refusal": None,
    }
    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["usage"]["completion_tokens"] == 20


def test_it_lists_its_models(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/v1/models", headers={"authorization": f"Bearer {KEY}"})

    listing = json.loads(conn.getresponse().read())

    assert listing["object"] == "list"
    assert {m["id"] for m in listing["data"]} == {f"fake-{name}" for name in SCENARIOS}


def test_it_lists_its_models_in_anthropics_shape_to_an_anthropic_client(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/v1/models", headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"})

    listing = json.loads(conn.getresponse().read())

    assert listing["has_more"] is False
    assert {m["id"] for m in listing["data"]} == {f"fake-{name}" for name in SCENARIOS}
    assert all(m["type"] == "model" and m["created_at"].endswith("Z") for m in listing["data"])


# --- Anthropic wire format ------------------------------------------------------


def anthropic_events(raw: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in sse_blocks(raw):
        assert len(block) == 2 and block[0].startswith("event: ") and block[1].startswith("data: ")
        events.append((block[0][len("event: ") :], json.loads(block[1][len("data: ") :])))
    return events


def test_every_anthropic_event_has_an_event_line_naming_its_type(server):
    body = {"model": "fake-normal", "max_tokens": 100, "stream": True, "messages": messages()}

    status, _, raw = anthropic_post(server, body)

    events = anthropic_events(raw)
    assert status == 200
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start, delta = events[0][1], events[-2][1]
    assert start["message"]["model"] == "fake-normal" and start["message"]["id"].startswith("msg_")
    assert start["message"]["usage"]["input_tokens"] == 2
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] == 20
    texts = [d["delta"]["text"] for n, d in events if n == "content_block_delta"]
    assert "".join(texts) == expected_text("fake-normal")


def test_anthropic_reasoning_is_a_thinking_block_with_a_signature_before_the_text(server):
    body = {"model": "fake-reasoning", "max_tokens": 100, "stream": True, "messages": messages()}

    events = anthropic_events(anthropic_post(server, body)[2])

    kinds = [d["delta"]["type"] for n, d in events if n == "content_block_delta"]
    assert kinds == ["thinking_delta"] * len(REASONING_TOKENS) + ["signature_delta"] + ["text_delta"] * 20
    blocks = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert blocks == ["thinking", "text"]


@pytest.mark.parametrize(("model", "stop_reason"), [("fake-length", "max_tokens"), ("fake-refusal", "refusal")])
def test_anthropic_stop_reasons(server, model, stop_reason):
    body = {"model": model, "max_tokens": 100, "stream": True, "messages": messages()}

    events = anthropic_events(anthropic_post(server, body)[2])

    assert events[-2][1]["delta"]["stop_reason"] == stop_reason


def test_an_anthropic_midstream_error_is_an_error_event(server):
    body = {"model": "fake-midstream-error", "max_tokens": 100, "stream": True, "messages": messages()}

    name, data = anthropic_events(anthropic_post(server, body)[2])[-1]

    assert name == "error"
    assert data == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_a_non_streaming_anthropic_reply_is_one_message(server):
    body = {"model": "fake-reasoning", "max_tokens": 100, "messages": messages()}

    message = json.loads(anthropic_post(server, body)[2])

    assert (message["type"], message["role"], message["stop_reason"]) == ("message", "assistant", "end_turn")
    assert [block["type"] for block in message["content"]] == ["thinking", "text"]
    assert message["content"][1]["text"] == expected_text("fake-reasoning")


@pytest.mark.parametrize(
    "body",
    [
        {"model": "fake-normal", "messages": messages()},  # no max_tokens
        {"model": "fake-normal", "max_tokens": 10, "messages": messages("")},
        {"model": "fake-normal", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]},
        {"model": "fake-normal", "max_tokens": 10, "messages": [*messages(), {"role": "assistant", "content": "a "}]},
        {
            "model": "fake-normal",
            "max_tokens": 10,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": messages(),
        },
    ],
)
def test_anthropic_requests_the_real_api_rejects_get_a_400(server, body):
    status, _, raw = anthropic_post(server, body)

    assert status == 400
    assert json.loads(raw)["error"]["type"] == "invalid_request_error"


# --- errors, auth, recording -----------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 529])
def test_error_scenarios_send_each_wire_formats_error_body(server, status):
    model = f"fake-error-{status}"

    openai_status, openai_headers, openai_raw = openai_post(server, {"model": model, "messages": messages()})
    anthropic_status, _, anthropic_raw = anthropic_post(
        server, {"model": model, "max_tokens": 5, "messages": messages()}
    )

    assert openai_status == anthropic_status == status
    assert set(json.loads(openai_raw)["error"]) == {"message", "type", "param", "code"}
    anthropic_body = json.loads(anthropic_raw)
    assert anthropic_body["type"] == "error" and set(anthropic_body["error"]) == {"type", "message"}
    assert (openai_headers["x-should-retry"], openai_headers["retry-after-ms"]) == ("false", "1")


def test_the_error_option_sets_the_error_code_and_type(server):
    model = "fake-error-400@error=content_policy_violation"

    openai_body = json.loads(openai_post(server, {"model": model, "messages": messages()})[2])
    anthropic_body = json.loads(anthropic_post(server, {"model": model, "max_tokens": 5, "messages": messages()})[2])

    assert openai_body["error"]["code"] == "content_policy_violation"
    assert anthropic_body["error"]["type"] == "content_policy_violation"


def test_an_unknown_model_is_a_404(server):
    status, _, raw = openai_post(server, {"model": "gpt-9", "messages": messages()})

    assert status == 404
    assert "gpt-9" in json.loads(raw)["error"]["message"]


def test_it_accepts_a_key_in_either_header_and_refuses_none(server):
    body = {"model": "fake-normal", "max_tokens": 5, "messages": messages()}

    assert post(server, "/v1/messages", body, {"x-api-key": KEY})[0] == 200
    assert post(server, "/v1/messages", body, {"authorization": f"Bearer {KEY}"})[0] == 200
    assert post(server, "/v1/messages", body)[0] == 401


def test_a_configured_key_must_match():
    body = {"model": "fake-normal", "messages": messages()}
    with FakeProvider(api_key="right") as strict:
        assert post(strict, "/v1/chat/completions", body, {"authorization": "Bearer wrong"})[0] == 401
        assert post(strict, "/v1/chat/completions", body, {"authorization": "Bearer right"})[0] == 200


def test_starting_on_a_taken_port_raises(server):
    with pytest.raises(OSError):
        FakeProvider(port=server.port).start()


def test_it_records_requests_with_lowercase_headers_and_json(server):
    openai_post(server, {"model": "fake-normal", "messages": messages("Recorded words here")})

    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json["messages"] == messages("Recorded words here")
    assert count_words(request.json) == 3


def test_it_keeps_connections_alive_between_requests(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    body = {"model": "fake-normal", "stream": True, "messages": messages()}

    first = openai_post(server, body, connection=conn)
    second = openai_post(server, body, connection=conn)
    conn.close()

    assert first[0] == second[0] == 200
    assert server.requests[0].client_port == server.requests[1].client_port


def test_a_flaky_429_fails_first_then_succeeds_and_clear_resets_it(server):
    body = {"model": "fake-flaky-429", "messages": messages()}

    statuses = [openai_post(server, body)[0] for _ in range(2)]
    server.clear()

    assert statuses == [429, 200]
    assert openai_post(server, body)[0] == 429


def test_timestamped_tokens_carry_their_send_time(server):
    body = {"model": "fake-timestamped@tokens=5", "stream": True, "messages": messages()}

    _, _, raw = openai_post(server, body)

    chunks = [json.loads(b[0][len("data: ") :]) for b in sse_blocks(raw)[:-1]]
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    stamps = [int(t[1:-1]) for t in texts if t]
    assert all(re.fullmatch(r"t\d+ ", t) for t in texts if t)
    assert len(stamps) == 5 and stamps == sorted(stamps)


# --- disconnects ----------------------------------------------------------------


def raw_stream_request(server, model: str) -> socket.socket:
    """Start a streaming request on a raw socket and read until the first token."""
    body = json.dumps({"model": model, "stream": True, "messages": messages()}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    received = b""
    while b'"content": "Hello"' not in received:
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        received += data
    return sock


def test_a_client_hanging_up_mid_stream_counts_as_a_disconnect(server):
    sock = raw_stream_request(server, "fake-long@delay=0.05")

    sock.close()

    assert server.wait_for_disconnect(1.0)
    assert server.disconnects == 1


def test_a_client_hanging_up_during_a_stall_counts_as_a_disconnect(server):
    sock = raw_stream_request(server, "fake-stall")

    sock.close()

    assert server.wait_for_disconnect(1.0)


def test_finished_streams_and_server_side_closes_are_not_disconnects(server):
    body = {"model": "fake-normal", "stream": True, "messages": messages()}
    openai_post(server, body)
    with pytest.raises(http.client.IncompleteRead):
        openai_post(server, {**body, "model": "fake-disconnect"})

    assert not server.wait_for_disconnect(0.2)
    assert server.disconnects == 0


# --- model names and expected text ---------------------------------------------


def test_model_name_options_override_scenario_and_server_defaults():
    assert parse_model("fake-normal", tokens=7, delay=0.1) == parse_model("fake-normal@tokens=7,delay=0.1")
    assert parse_model("fake-long").tokens == 500
    assert parse_model("fake-long@tokens=3", tokens=9).tokens == 3
    assert parse_model("fake-slow-first").first_delay == 0.3
    assert parse_model("fake-normal@first_delay=0.5,delay=0").first_delay == 0.5
    assert parse_model("fake-flaky-429@fails=2").fails == 2


@pytest.mark.parametrize("name", ["gpt-4.1", "fake-nope", "fake-normal@tokens=x", "fake-normal@colour=red", 42])
def test_names_that_are_not_scenarios_parse_to_none(name):
    assert parse_model(name) is None


def test_expected_text_splits_grapheme_clusters_and_carries_html():
    text = expected_text("fake-normal")

    assert "你好，世界" in text and "👋🏽" in text and "🎉" in text
    assert "<script>alert(1)</script>" in text and "<img src=x onerror=alert(1)>" in text
    assert " 👋" in BASE_TOKENS and "🏽" in BASE_TOKENS  # the waving hand and its skin tone are separate chunks


def test_expected_text_follows_tokens_max_tokens_and_partial_scenarios():
    assert expected_text("fake-normal@tokens=3") == "Hello, world"
    assert expected_text("fake-normal", tokens=2) == "Hello,"
    assert expected_text("fake-long").endswith(" w499")
    assert expected_text("fake-normal", max_tokens=1) == "Hello"
    assert expected_text("fake-midstream-error") == "".join(BASE_TOKENS[:10])
    assert expected_text("fake-error-500") == ""
    assert expected_reasoning("fake-reasoning") == "".join(REASONING_TOKENS)
    assert expected_reasoning("fake-normal") == ""
    with pytest.raises(ValueError):
        expected_text("fake-timestamped")


# --- the management command -----------------------------------------------------


class _Output(io.StringIO):
    """Captures the command's output and tells when it has printed everything."""

    def __init__(self):
        super().__init__()
        self.done = threading.Event()

    def write(self, text):
        written = super().write(text)
        if "Ctrl-C to stop." in self.getvalue():
            self.done.set()
        return written


def test_the_management_command_serves_and_prints_the_environment_to_export():
    output = _Output()
    command = FakeProviderCommand(stdout=output)
    thread = threading.Thread(target=call_command, args=(command, "--port", "0", "--delay", "0"))
    thread.start()
    try:
        assert output.done.wait(5)
        printed = output.getvalue().splitlines()
        base_url = next(line.split("=", 1)[1] for line in printed if line.startswith("export OPENAI_BASE_URL="))
        port = int(base_url.rsplit(":", 1)[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/v1/models", headers={"authorization": "Bearer fake-key"})
        assert conn.getresponse().status == 200
        assert f"export ANTHROPIC_BASE_URL=http://127.0.0.1:{port}" in printed
        assert "export OPENAI_API_KEY=fake-key" in printed
        assert "  fake-midstream-error" in printed
    finally:
        command.stop_requested.set()
        thread.join(5)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
