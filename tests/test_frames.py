"""Delta frames are built without the template: they must be what ``_frame.html`` renders."""

import uuid

import pytest
from django.template.loader import render_to_string

from conversations import frames

TEXTS = ["", "plain", " <b>&amp;</b> \"quoted\" 'single' ", "t1234567890123456789 ", "日本語 👋\n\n```x```"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("reasoning", ["", "think <i>'hard'</i> & \"long\""])
def test_a_delta_frame_is_what_the_template_renders(text, reasoning):
    message_id = uuid.uuid4()
    context = {"id": message_id, "extend": text, "reasoning": reasoning}
    # The template file ends with a newline, which no swap uses.
    expected = render_to_string("conversations/_frame.html", context).removesuffix("\n")
    assert frames.delta_html(message_id, text, reasoning) == expected
