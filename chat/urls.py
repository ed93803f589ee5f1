from django.urls import path

from . import views

app_name = "chat"

urlpatterns = [
    path("", views.lobby, name="lobby"),
    path("rooms/", views.create_room, name="create_room"),
    path("rooms/<slug:slug>/", views.room, name="room"),
    path("rooms/<slug:slug>/read", views.mark_read, name="mark_read"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/", views.account, name="account"),
    path("accounts/delete/", views.delete_account, name="delete_account"),
    path("healthz", views.healthz, name="healthz"),
]
