from django.urls import path

from . import views

app_name = "chat"

urlpatterns = [
    path("", views.lobby, name="lobby"),
    path("rooms/", views.create_room, name="create_room"),
    path("rooms/<slug:slug>/", views.room, name="room"),
    path("rooms/<slug:slug>/read", views.mark_read, name="mark_read"),
    path("rooms/<slug:slug>/restrictions", views.restrictions, name="restrictions"),
    path("rooms/<slug:slug>/members", views.members, name="members"),
    path("rooms/<slug:slug>/notifications", views.notifications, name="notifications"),
    path("rooms/<slug:slug>/members/<str:username>", views.member, name="member"),
    path("rooms/<slug:slug>/messages/<int:message_id>/hide", views.hide, name="hide"),
    path("rooms/<slug:slug>/messages/<int:message_id>/versions", views.versions, name="versions"),
    path("rooms/<slug:slug>/uploads", views.upload, name="upload"),
    path("files/thumbnails/<int:attachment_id>", views.thumbnail, name="thumbnail"),
    path("files/<int:attachment_id>/<str:name>", views.file, name="file"),
    path("direct", views.direct, name="direct"),
    path("api/users", views.users, name="users"),
    path("api/rooms", views.rooms, name="rooms"),
    path("api/search", views.search, name="search"),
    path("search", views.search_page, name="search_page"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/", views.account, name="account"),
    path("accounts/delete/", views.delete_account, name="delete_account"),
    path("healthz", views.healthz, name="healthz"),
]
