from django import template
from django.utils.safestring import SafeString

from conversations import providers
from conversations.markdown import render_markdown

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    """Untrusted model output as sanitised HTML."""
    return render_markdown(text)


@register.simple_tag
def offered_models() -> list:
    """The models the picker offers (for "Regenerate with…")."""
    return providers.offered_models()


@register.filter
def model_label(msg) -> str:
    """The picker's label for the model that wrote ``msg``, else its raw id."""
    spec = providers.get_model(msg.model_key) if msg.model_key else None
    return spec.label if spec else msg.model
