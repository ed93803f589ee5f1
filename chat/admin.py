from django.contrib import admin

from .models import Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_by", "created", "cursor"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    raw_id_fields = ["created_by"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "room", "author", "short_body", "created", "edited", "deleted_by"]
    list_select_related = ["room", "author", "deleted_by"]
    list_filter = ["room"]
    search_fields = ["body", "author__username"]
    readonly_fields = [f.name for f in Message._meta.fields]
    date_hierarchy = "created"

    @admin.display(description="body")
    def short_body(self, obj: Message) -> str:
        return obj.body[:60]

    # Moderation (hide/restore through the services, reaching live sockets) is its own issue;
    # until then the admin reads messages but cannot change or remove them behind the sockets.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
