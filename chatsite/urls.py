from django.contrib import admin
from django.urls import include, path

from conversations import api, openai_api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls()),
    path("v1/", openai_api.urls()),
    path("", include("conversations.urls")),
]
