from django.contrib.auth import views as auth_views
from django.urls import path

from conversations import views

urlpatterns = [
    path("", views.index, name="index"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("usage/", views.usage_page, name="usage"),
    path("search/", views.search_page, name="search"),
    path("c/new/", views.new_conversation, name="new_conversation"),
    path("c/<uuid:conversation_id>/", views.conversation, name="conversation"),
    path("c/<uuid:conversation_id>/earlier/", views.earlier, name="earlier"),
    path("c/<uuid:conversation_id>/rename/", views.rename, name="rename"),
    path("c/<uuid:conversation_id>/model/", views.set_model, name="set_model"),
    path("c/<uuid:conversation_id>/settings/", views.update_settings, name="update_settings"),
    path("c/<uuid:conversation_id>/delete/", views.delete, name="delete"),
    path("c/<uuid:conversation_id>/send/", views.send, name="send"),
    path("c/<uuid:conversation_id>/stop/", views.stop, name="stop"),
    path("c/<uuid:conversation_id>/m/<uuid:message_id>/retry/", views.retry, name="retry"),
    path("c/<uuid:conversation_id>/m/<uuid:message_id>/continue/", views.continue_reply, name="continue"),
    path("c/<uuid:conversation_id>/m/<uuid:message_id>/regenerate/", views.regenerate, name="regenerate"),
    path("c/<uuid:conversation_id>/m/<uuid:message_id>/edit/", views.edit_message, name="edit_message"),
    path("c/<uuid:conversation_id>/m/<uuid:message_id>/switch/", views.switch, name="switch"),
    path("c/<uuid:conversation_id>/m/<uuid:message_id>/feedback/", views.feedback, name="feedback"),
]
