from django.urls import path, re_path

from conversations import consumers

websocket_urlpatterns = [
    path("ws/conversations/<uuid:conversation_id>/", consumers.ConversationConsumer.as_asgi()),
    path("ws/temporary/<uuid:conversation_id>/", consumers.TemporaryChatConsumer.as_asgi()),
    re_path(r"", consumers.UnknownPathConsumer.as_asgi()),  # last: every other path
]
