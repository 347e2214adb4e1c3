"""Images in a turn, through the real openai and anthropic SDKs over HTTP
against the fake provider: the request each wire format receives, part by part."""

import base64
import io

import pytest
from PIL import Image

from conversations.providers.base import ChatMessage, ImagePart, ModelSpec, TextDelta
from tests import fakes
from tests.fakes import chat, of_type, run

fake_server, clean_env, fake = fakes.fake_server, fakes.clean_env, fakes.fake


def _png(colour=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 3), colour).save(out, "PNG")
    return out.getvalue()


PNG = _png()
JPEG_IMAGE = ImagePart("image/jpeg", b"\xff\xd8\xff\xe0 not decoded here")


async def test_openai_gets_the_text_then_each_image_as_a_data_url_content_part(fake):
    turns = (
        ChatMessage("user", "What is in these? 这是什么", images=(ImagePart("image/png", PNG), JPEG_IMAGE)),
        ChatMessage("assistant", "A red square."),
        ChatMessage("user", "And now?"),
    )
    events, error = await run(chat("openai", "fake-normal", turns))

    assert error is None and of_type(events, TextDelta)
    messages = fake.requests[-1].json["messages"]
    first = messages[0]
    assert first["role"] == "user"
    assert first["content"][0] == {"type": "text", "text": "What is in these? 这是什么"}
    assert first["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()},
    }
    assert first["content"][2]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert base64.b64decode(first["content"][1]["image_url"]["url"].split(",", 1)[1]) == PNG
    # Turns without images stay plain strings.
    assert messages[1:] == [{"role": "assistant", "content": "A red square."}, {"role": "user", "content": "And now?"}]


async def test_anthropic_gets_base64_image_blocks_before_the_text(fake):
    turns = (ChatMessage("user", "Describe it", images=(ImagePart("image/png", PNG),)),)
    events, error = await run(chat("anthropic", "fake-normal", turns))

    assert error is None and of_type(events, TextDelta)
    (turn,) = fake.requests[-1].json["messages"]
    assert turn == {
        "role": "user",
        "content": [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
            },
            {"type": "text", "text": "Describe it"},
        ],
    }


async def test_anthropic_merges_an_image_turn_with_a_following_text_turn_of_the_same_role(fake):
    turns = (ChatMessage("user", "", images=(ImagePart("image/png", PNG),)), ChatMessage("user", "What colour?"))
    await run(chat("anthropic", "fake-normal", turns))

    (turn,) = fake.requests[-1].json["messages"]
    assert [block["type"] for block in turn["content"]] == ["image", "text"]
    assert turn["content"][1]["text"] == "What colour?"


@pytest.mark.parametrize(
    ("provider", "name", "accepts"),
    [
        ("openai", "gpt-4o-mini", True),
        ("openai", "gpt-4.1", True),
        ("anthropic", "claude-sonnet-4-6", True),
        ("openai", "qwen2.5-vl-72b-instruct", True),
        ("openai", "deepseek-chat", False),
        ("openai", "gpt-3.5-turbo", False),
        ("demo", "demo", False),
    ],
)
def test_which_models_accept_images_is_guessed_from_the_name(provider, name, accepts):
    assert ModelSpec(provider, name, name).accepts_images is accepts


def test_the_vision_option_overrides_the_guess():
    assert ModelSpec("openai", "llama3.1:8b", "Llama", vision=True).accepts_images
    assert not ModelSpec("openai", "gpt-4o", "GPT-4o", vision=False).accepts_images
