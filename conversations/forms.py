from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm
from django.utils.translation import gettext_lazy as _

from conversations.models import ApiKey, Conversation


class SignupForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        fields = ("username",)


class RenameForm(forms.Form):
    title = forms.CharField(label=_("Title"), max_length=200, required=False, strip=True)


class ModelForm(forms.Form):
    model = forms.CharField(label=_("Model"), max_length=200)

    def clean_model(self) -> str:
        from conversations import providers

        key = self.cleaned_data["model"]
        if providers.get_model(key) is None:
            raise forms.ValidationError(_("That model is not offered here."))
        return key


class ConversationSettingsForm(forms.ModelForm):
    class Meta:
        model = Conversation
        fields = ("system_prompt", "temperature", "max_tokens")
        widgets = {"system_prompt": forms.Textarea(attrs={"rows": 4})}

    def clean_temperature(self):
        value = self.cleaned_data["temperature"]
        if value is not None and not 0 <= value <= 2:
            raise forms.ValidationError(_("Temperature must be between 0 and 2."))
        return value

    def clean_system_prompt(self) -> str:
        value = self.cleaned_data["system_prompt"]
        if len(value) > settings.CHAT_MAX_SYSTEM_PROMPT_CHARS:
            raise forms.ValidationError(
                _("That system prompt is too long (%(length)s characters; the limit is %(limit)s).")
                % {"length": len(value), "limit": settings.CHAT_MAX_SYSTEM_PROMPT_CHARS}
            )
        return value

    def clean_max_tokens(self):
        from conversations import providers

        value = self.cleaned_data["max_tokens"]
        spec = providers.get_model(self.instance.model_key)
        limit = spec.max_tokens_allowed() if spec else settings.CHAT_MAX_TOKENS_LIMIT
        if value is not None and not 1 <= value <= limit:
            message = _("Max tokens must be between 1 and %(limit)s for this model.")
            raise forms.ValidationError(message % {"limit": limit})
        return value


class MessageForm(forms.Form):
    """The composer: the no-JavaScript view and the websocket both validate with it."""

    text = forms.CharField(
        label=_("Message"),
        strip=False,
        widget=forms.Textarea,
        error_messages={"required": _("Type a message first.")},
    )

    def clean_text(self) -> str:
        text = self.cleaned_data["text"]
        if not text.strip():
            raise forms.ValidationError(_("Type a message first."))
        if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise forms.ValidationError(
                _("That message is too long (%(length)s characters; the limit is %(limit)s).")
                % {"length": len(text), "limit": settings.CHAT_MAX_MESSAGE_CHARS}
            )
        return text


def _offered_choices() -> list[tuple[str, str]]:
    from conversations import providers

    return [(spec.key, spec.label) for spec in providers.offered_models()]


COMPARE_MOST = 4


class SendForm(MessageForm):
    """A conversation's composer: the message, and the models to compare if
    any are ticked ("Compare": two to four distinct offered models, each
    writing its own reply to the message)."""

    compare = forms.MultipleChoiceField(
        label=_("Compare"),
        required=False,
        choices=_offered_choices,
        error_messages={"invalid_choice": _("That model is not offered here.")},
    )

    def clean_compare(self) -> list[str]:
        keys = self.cleaned_data["compare"]
        if len(set(keys)) != len(keys):
            raise forms.ValidationError(_("Choose each model to compare only once."))
        if keys and not 2 <= len(keys) <= COMPARE_MOST:
            raise forms.ValidationError(_("Choose two to four models to compare."))
        return keys

    def first_error(self) -> str:
        return next(iter(self.errors.values()))[0]


class StartForm(MessageForm, ModelForm):
    """The home page's composer: the first message and the model it goes to
    (the first offered model when none is given)."""

    model = forms.CharField(label=_("Model"), max_length=200, required=False)

    def clean_model(self) -> str:
        from conversations import providers

        if self.cleaned_data["model"]:
            return super().clean_model()
        default = providers.default_model()
        if default is None:
            raise forms.ValidationError(_("No model is configured, so nothing can answer yet."))
        return default.key


class FeedbackForm(forms.Form):
    # "clear" removes the rating: pressing a pressed thumb again takes it back.
    rating = forms.ChoiceField(choices=[("up", _("Thumbs up")), ("down", _("Thumbs down")), ("clear", _("Remove"))])
    comment = forms.CharField(label=_("Comment"), max_length=2000, required=False, strip=True)


class ImportForm(forms.Form):
    file = forms.FileField(
        label=_("Export file"),
        help_text=_(
            "This app's JSON, or the conversations.json (or the whole ZIP) of a ChatGPT or Claude data export."
        ),
        error_messages={"required": _("Choose a file to import.")},
    )


class DeleteConversationsForm(forms.Form):
    confirm = forms.BooleanField(
        label=_("I understand that all my conversations will be deleted, and that this cannot be undone."),
        error_messages={"required": _("Tick the box to confirm.")},
    )


class DeleteAccountForm(forms.Form):
    password = forms.CharField(
        label=_("Your password"), strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )

    def __init__(self, *args, request, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

    def clean_password(self) -> str:
        from django.contrib.auth import authenticate

        password = self.cleaned_data["password"]
        # Through the authentication backends, so that django-axes counts a
        # wrong guess here as it does at log-in: a session left open does
        # not let anyone try passwords without limit.
        user = self.request.user
        if authenticate(self.request, username=user.get_username(), password=password) != user:
            raise forms.ValidationError(_("That is not your password. Nothing was deleted."))
        return password


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label=_("Name"),
        max_length=ApiKey._meta.get_field("name").max_length,
        strip=True,
        help_text=_("Say where it will be used, such as “backup job”, to tell your keys apart."),
        error_messages={"required": _("Give the key a name.")},
    )
