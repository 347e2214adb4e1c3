from django.conf import settings


def chat(request) -> dict:
    return {
        "signup_open": settings.CHAT_SIGNUP != "closed",
        "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        "sharing_on": settings.CHAT_SHARING != "off",
    }
