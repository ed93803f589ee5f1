"""Moderation in the Django admin. Every change goes through chat.services, so it reaches live
sockets on every server process; nothing is removed from the database behind their backs."""

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import (
    ALL_VAR,
    ERROR_FLAG,
    IS_FACETS_VAR,
    IS_POPUP_VAR,
    ORDER_VAR,
    PAGE_VAR,
    SEARCH_VAR,
    TO_FIELD_VAR,
)
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join

from . import selectors, services
from .models import (
    Attachment,
    Membership,
    Message,
    ModerationAction,
    Report,
    Room,
    RoomRestriction,
)
from .realtime.protocol import ChatError


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that are read here, never added, edited or deleted (changes go through services)."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class RoomAdminForm(forms.ModelForm):
    """Adding a room: the site's own name rule (chat.services.clean_room_name); public or
    private (direct rooms are opened by their people, never here)."""

    kind = forms.ChoiceField(
        choices=[(Room.Kind.PUBLIC, "public"), (Room.Kind.PRIVATE, "private")],
        initial=Room.Kind.PUBLIC,
        required=False,
    )

    class Meta:
        model = Room
        fields = ["name", "kind", "topic"]

    def clean_name(self) -> str:
        try:
            name, _ = services.clean_room_name(self.cleaned_data["name"])
        except ChatError as error:
            raise forms.ValidationError(error.detail) from None
        return name


class ArchivedFilter(admin.SimpleListFilter):
    title = "archived"
    parameter_name = "archived"

    def lookups(self, request, model_admin):
        return [("no", "open"), ("yes", "archived")]

    def queryset(self, request, queryset):
        if self.value() in ("no", "yes"):
            return queryset.filter(archived_at__isnull=self.value() == "no")
        return queryset


class ReadOnlyInline(admin.TabularInline):
    """An inline that shows rows and changes none (changes are made on their own pages)."""

    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class MembershipInline(ReadOnlyInline):
    """A room's members with their roles, read here; removing one is an audited action on the
    Memberships page (services.remove_member), which also closes their sockets."""

    model = Membership
    fields = ["user", "role", "joined"]
    readonly_fields = fields
    verbose_name_plural = "members (remove them from the Memberships page)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user")


class AttachmentInline(ReadOnlyInline):
    """A message's files (§8), read here: name (a link to the file, which the access policy lets
    moderators open, a hidden message's too), size, type. Hiding the message hides them from
    everyone else; the author's deletion erases them."""

    model = Attachment
    fields = ["file", "size_shown", "content_type", "dimensions", "uploader", "created"]
    readonly_fields = fields
    verbose_name_plural = "attachments"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("uploader")

    @admin.display(description="file")
    def file(self, obj: Attachment) -> str:
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">{}</a>',
            reverse("chat:file", args=[obj.pk, obj.name]),
            obj.name,
        )

    @admin.display(description="size")
    def size_shown(self, obj: Attachment) -> str:
        return filesizeformat(obj.size)

    @admin.display(description="image")
    def dimensions(self, obj: Attachment) -> str:
        return f"{obj.width} x {obj.height}" if obj.width else "-"

    # Shown wherever its message is (the message's page decides who sees it).
    def has_view_permission(self, request, obj=None) -> bool:
        return True


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "slug", "created_by", "created", "cursor", "archived_at"]
    list_select_related = ["created_by"]
    list_filter = ["kind", ArchivedFilter]
    search_fields = ["name", "slug"]
    form = RoomAdminForm
    actions = ["archive_rooms", "unarchive_rooms"]
    inlines = [MembershipInline]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "kind", "topic"]
        return [
            "name",
            "kind",
            "topic",
            "slug",
            "created_by",
            "created",
            "cursor",
            "archived_at",
            "archived_by",
        ]

    def get_inlines(self, request, obj=None):
        return self.inlines if obj is not None else []

    def get_readonly_fields(self, request, obj=None):
        # A room is made through the service and then only archived or unarchived (audited);
        # renaming would move its URL under open pages, so it is not offered.
        return self.get_fields(request, obj) if obj is not None else []

    def save_model(self, request, obj: Room, form, change: bool) -> None:
        if change:
            return
        room = services.create_room(
            name=form.cleaned_data["name"],
            created_by=request.user,
            kind=form.cleaned_data.get("kind") or Room.Kind.PUBLIC,
            topic=form.cleaned_data.get("topic", ""),
            enforce_limit=False,
        )
        obj.pk, obj.slug, obj.created_by = room.pk, room.slug, room.created_by

    def has_delete_permission(self, request, obj=None) -> bool:
        # A room's messages are the record; rooms are archived, not deleted.
        return False

    def has_archive_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("chat.archive_room")

    @admin.action(description="Archive selected rooms", permissions=["archive"])
    def archive_rooms(self, request: HttpRequest, queryset: QuerySet) -> None:
        archived = sum(services.archive_room(room=room, by=request.user) for room in queryset)
        self.message_user(request, f"Archived {archived} room(s).", messages.SUCCESS)

    @admin.action(description="Unarchive selected rooms", permissions=["archive"])
    def unarchive_rooms(self, request: HttpRequest, queryset: QuerySet) -> None:
        restored = sum(services.unarchive_room(room=room, by=request.user) for room in queryset)
        self.message_user(request, f"Unarchived {restored} room(s).", messages.SUCCESS)


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("live", "live"), ("edited", "edited"), ("deleted", "deleted")]

    def queryset(self, request, queryset):
        if self.value() == "live":
            return queryset.filter(deleted_at__isnull=True, edited__isnull=True)
        if self.value() == "edited":
            return queryset.filter(deleted_at__isnull=True, edited__isnull=False)
        if self.value() == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


class AuthorFilter(admin.SimpleListFilter):
    """Messages by one author (their exact username), apart from the search of the text. The
    box suggests names as one types (the admin's autocomplete of users, chat/admin_filters.js)."""

    title = "author"
    parameter_name = "author"
    template = "admin/chat/author_filter.html"

    def __init__(self, request, params, model, model_admin) -> None:
        super().__init__(request, params, model, model_admin)
        # What the filter's form keeps of the page's other choices (its own value and the page
        # number are replaced).
        self.other_params = [
            (name, value)
            for name, values in request.GET.lists()
            if name not in (self.parameter_name, PAGE_VAR)
            for value in values
        ]

    def has_output(self) -> bool:
        return True

    def lookups(self, request, model_admin):
        return []

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(author__username=self.value())
        return queryset


class RestrictForm(forms.Form):
    """The confirmation of a ban or mute from a message: for how long, and why."""

    DURATIONS = {
        "1h": ("for 1 hour", timedelta(hours=1)),
        "1d": ("for 1 day", timedelta(days=1)),
        "7d": ("for 7 days", timedelta(days=7)),
        "30d": ("for 30 days", timedelta(days=30)),
        "forever": ("for good (until lifted)", None),
    }

    duration = forms.ChoiceField(
        choices=[(key, label) for key, (label, _) in DURATIONS.items()], initial="1d"
    )
    reason = forms.CharField(
        max_length=RoomRestriction._meta.get_field("reason").max_length,
        required=False,
        help_text="Recorded in the audit log.",
    )

    def until(self):
        delta = self.DURATIONS[self.cleaned_data["duration"]][1]
        return None if delta is None else timezone.now() + delta


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    # Read-only: the change view is a page where moderators may read hidden text, and deleting
    # is replaced by hiding, so a row never vanishes without live sockets learning of it.

    # The ban/mute links stand beside the author, before the long columns, so they stay in
    # sight at 1280 px with the admin's navigation open.
    list_display = ["id", "room", "author", "restrict_author", "short_body", "state", "posted"]
    list_select_related = ["room", "author", "deleted_by"]
    list_filter = [AuthorFilter, StateFilter, "room", "created"]
    # Today's messages first (the primary key follows posting order and is indexed).
    ordering = ["-id"]
    # The text only: a person is found with the author filter, never by a word in a message.
    search_fields = ["body"]
    search_help_text = (
        "Searches the text of messages only. To see one person's messages, use the author filter."
    )
    date_hierarchy = "created"
    readonly_fields = [
        "room",
        "author",
        "body",
        "created",
        "edited",
        "earlier_versions",
        "deleted_at",
        "deleted_by",
        "cursor",
    ]
    actions = ["hide_messages", "restore_messages"]
    inlines = [AttachmentInline]
    show_full_result_count = False  # no COUNT(*) over 100,000 rows on every page

    class Media:
        css = {"all": ["chat/admin.css"]}
        js = ["chat/admin_filters.js"]

    @admin.display(description="body")
    def short_body(self, obj: Message) -> str:
        return obj.body if len(obj.body) <= 80 else obj.body[:79] + "…"

    @admin.display(description="posted", ordering="created")
    def posted(self, obj: Message) -> str:
        # Short enough for the row to fit beside the navigation; the full time is on the page.
        return date_format(timezone.localtime(obj.created), "M\u00a0j, H:i")

    @admin.display(description="state")
    def state(self, obj: Message) -> str:
        if obj.deleted_at:
            return f"deleted by {obj.deleted_by.username if obj.deleted_by else '?'}"
        return "edited" if obj.edited else "live"

    @admin.display(description="earlier versions")
    def earlier_versions(self, obj: Message) -> str:
        # The texts its edits replaced, oldest first, deleted or not (PROTOCOL.md §2: moderators
        # still read deleted text here).
        revisions = obj.revisions.order_by("id")
        if not revisions:
            return "none (never edited)" if not obj.edited else "none kept"
        return format_html(
            '<ol class="message-versions">{}</ol>',
            format_html_join(
                "",
                '<li><time datetime="{}">{}</time><pre>{}</pre></li>',
                (
                    (
                        revision.written.isoformat(),
                        date_format(timezone.localtime(revision.written), "DATETIME_FORMAT"),
                        revision.body,
                    )
                    for revision in revisions
                ),
            ),
        )

    @admin.display(description="in this room")
    def restrict_author(self, obj: Message) -> str:
        # Each link leads to a page that names the author and the room and shows the message.
        return format_html(
            '<a href="{}" title="Ban {} from {}">ban</a> · '
            '<a href="{}" title="Mute {} in {}">mute</a>',
            reverse("admin:chat_message_restrict", args=[obj.pk, "ban"]),
            obj.author.get_username(),
            obj.room.name,
            reverse("admin:chat_message_restrict", args=[obj.pk, "mute"]),
            obj.author.get_username(),
            obj.room.name,
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Direct conversations are private from moderators (PROTOCOL.md §9): their messages
        # reach the admin only through a report. Every page of this admin starts here.
        return super().get_queryset(request).exclude(room__kind=Room.Kind.DIRECT)

    def get_urls(self):
        restrict = self.admin_site.admin_view(self.restrict_view)
        return [
            path(
                "<int:message_id>/restrict/<str:kind>/",
                restrict,
                name="chat_message_restrict",
            ),
            *super().get_urls(),
        ]

    def restrict_view(self, request: HttpRequest, message_id: int, kind: str) -> HttpResponse:
        """Confirm a ban or mute of a message's author in its room (services.restrict_user)."""
        if not request.user.has_perm("chat.add_roomrestriction"):
            raise PermissionDenied
        if kind not in RoomRestriction.Kind.values:
            return HttpResponseBadRequest("Ban or mute only.")
        message = get_object_or_404(
            self.get_queryset(request).select_related("room", "author", "deleted_by"),
            pk=message_id,
        )
        form = RestrictForm(request.POST or None)
        try:
            services.check_can_restrict(user=message.author, by=request.user)
            refusal = None
        except ChatError as error:
            refusal = error.detail
        if request.method == "POST" and refusal is None and form.is_valid():
            try:
                services.restrict_user(
                    room=message.room,
                    user=message.author,
                    kind=kind,
                    until=form.until(),
                    reason=form.cleaned_data["reason"],
                    by=request.user,
                )
            except ChatError as error:
                refusal = error.detail
            else:
                self.message_user(
                    request,
                    f"{'Banned' if kind == 'ban' else 'Muted'} {message.author.get_username()} "
                    f"in {message.room.name} "
                    f"{RestrictForm.DURATIONS[form.cleaned_data['duration']][0]}.",
                    messages.SUCCESS,
                )
                return redirect("admin:chat_message_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{'Ban' if kind == 'ban' else 'Mute'} {message.author.get_username()} "
            f"{'from' if kind == 'ban' else 'in'} {message.room.name}?",
            "message_obj": message,
            "kind": kind,
            "form": form,
            "refusal": refusal,
            "full_form_url": (
                f"{reverse('admin:chat_roomrestriction_add')}"
                f"?room={message.room_id}&user={message.author_id}&kind={kind}"
            ),
        }
        status = 200
        if request.method == "POST":
            status = 403 if refusal is not None else 400
        return TemplateResponse(
            request, "admin/chat/message/restrict_confirmation.html", context, status=status
        )

    def has_moderate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("chat.moderate_message")

    @admin.action(description="Hide selected messages", permissions=["moderate"])
    def hide_messages(self, request: HttpRequest, queryset: QuerySet) -> None:
        changed = sum(
            services.hide_message(message=message, by=request.user)
            for message in queryset.select_related("room", "author")
        )
        self.message_user(request, f"Hid {changed} message(s).", messages.SUCCESS)

    @admin.action(description="Restore selected hidden messages", permissions=["moderate"])
    def restore_messages(self, request: HttpRequest, queryset: QuerySet) -> None:
        changed = sum(
            services.restore_message(message=message, by=request.user)
            for message in queryset.select_related("room", "author")
        )
        self.message_user(request, f"Restored {changed} message(s).", messages.SUCCESS)


@admin.register(Membership)
class MembershipAdmin(ReadOnlyAdmin):
    """Who is in which room. Moderators remove members here (audited, through
    services.remove_member: a notice in the room, their sockets there closed). A private
    room's last owner stays while others remain; direct rooms' people are fixed."""

    list_display = ["user", "room", "room_kind", "role", "joined"]
    list_select_related = ["user", "room"]
    list_filter = ["role", "room__kind"]
    search_fields = ["user__username", "room__name", "room__slug"]
    actions = ["remove_members"]

    @admin.display(description="kind", ordering="room__kind")
    def room_kind(self, obj: Membership) -> str:
        return obj.room.kind

    def has_remove_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("chat.remove_member")

    @admin.action(description="Remove selected members from their rooms", permissions=["remove"])
    def remove_members(self, request: HttpRequest, queryset: QuerySet) -> None:
        removed, refused = 0, []
        for membership in queryset.select_related("room", "user"):
            try:
                services.remove_member(
                    room=membership.room,
                    by=request.user,
                    username=membership.user.get_username(),
                    moderator=True,
                )
            except ChatError as error:
                refused.append(f"{membership.user} in {membership.room}: {error.detail}")
            else:
                removed += 1
        self.message_user(request, f"Removed {removed} member(s).", messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.WARNING)


class ReportStateFilter(admin.SimpleListFilter):
    """The queue shows open reports unless asked for closed ones (or all)."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("open", "open"), ("closed", "closed"), ("all", "all")]

    def choices(self, changelist):
        for value, label in self.lookup_choices:
            yield {
                "selected": (self.value() or "open") == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request, queryset):
        value = self.value() or "open"
        if value == "all":
            return queryset
        return queryset.filter(
            state=Report.State.CLOSED if value == "closed" else Report.State.OPEN
        )


class CloseReportForm(forms.Form):
    """Closing a report from the queue: one button per action, a duration for a mute or ban,
    and a note for the audit log."""

    resolution = forms.ChoiceField(choices=Report.Resolution.choices)
    duration = forms.ChoiceField(
        choices=[(key, label) for key, (label, _) in RestrictForm.DURATIONS.items()],
        initial="1d",
        required=False,
    )
    note = forms.CharField(
        max_length=ModerationAction._meta.get_field("reason").max_length,
        required=False,
        help_text="Recorded in the audit log; the reporters are only told it was handled.",
    )

    def until(self):
        delta = RestrictForm.DURATIONS[self.cleaned_data["duration"] or "1d"][1]
        return None if delta is None else timezone.now() + delta


# The permission each way of closing a report needs, beside chat.change_report.
CLOSING_PERMISSIONS = {
    Report.Resolution.HIDDEN: "chat.moderate_message",
    Report.Resolution.MUTED: "chat.add_roomrestriction",
    Report.Resolution.BANNED: "chat.add_roomrestriction",
    Report.Resolution.DISMISSED: "chat.change_report",
}


@admin.register(Report)
class ReportAdmin(ReadOnlyAdmin):
    """The report queue (PROTOCOL.md §9), newest first. A report's page shows the message, its
    author and room, every report of it and the ten messages around it, and closes them all
    with one click (services.close_reports). A direct conversation is private: its text shows
    on that page only, and each reading of it is in the audit log (services.record_report_view)."""

    list_display = [
        "created",
        "reported_message",
        "message_author",
        "room_shown",
        "reporter",
        "reason",
        "reports_of_message",
        "state_shown",
    ]
    list_display_links = ["created", "reported_message"]
    list_select_related = ["message__room", "message__author", "reporter"]
    list_filter = [ReportStateFilter, "resolution", "message__room__kind"]
    # Reporters and reasons only: a search of message text would read direct conversations.
    search_fields = ["reporter__username", "reason"]
    search_help_text = "Searches reporters' names and their reasons."
    ordering = ["-created", "-id"]

    class Media:
        css = {"all": ["chat/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(_reports=Count("message__reports"))

    @admin.display(description="message")
    def reported_message(self, obj: Report) -> str:
        if obj.message.room.kind == Room.Kind.DIRECT:
            return "(a direct conversation: open the report to read it)"
        body = obj.message.body
        return body if len(body) <= 80 else body[:79] + "…"

    @admin.display(description="author")
    def message_author(self, obj: Report) -> str:
        return obj.message.author.get_username()

    @admin.display(description="room")
    def room_shown(self, obj: Report) -> str:
        room = obj.message.room
        return "direct conversation" if room.kind == Room.Kind.DIRECT else room.name

    @admin.display(description="reports of it", ordering="_reports")
    def reports_of_message(self, obj: Report) -> int:
        return obj._reports

    @admin.display(description="state")
    def state_shown(self, obj: Report) -> str:
        return obj.get_resolution_display() if obj.state == Report.State.CLOSED else "open"

    def change_view(self, request: HttpRequest, object_id, form_url="", extra_context=None):
        report = self.get_object(request, unquote(object_id))
        if report is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, report):
            raise PermissionDenied
        message = (
            Message.objects.select_related("room", "author", "deleted_by")
            .filter(pk=report.message_id)
            .get()
        )
        form = CloseReportForm(request.POST or None)
        if request.method == "POST":
            return self._close(request, report, message, form)
        if message.room.kind == Room.Kind.DIRECT:
            services.record_report_view(message=message, by=request.user)
        reports = list(message.reports.select_related("reporter", "closed_by").order_by("created"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Report of a message by {message.author.get_username()}",
            "report": report,
            "message_obj": message,
            "room_shown": self.room_shown(report),
            "reports": reports,
            "open": any(r.state == Report.State.OPEN for r in reports),
            "around": selectors.report_context(message),
            "form": form,
            "can_close": {
                value: request.user.has_perm("chat.change_report")
                and request.user.has_perm(permission)
                for value, permission in CLOSING_PERMISSIONS.items()
            },
        }
        return TemplateResponse(request, "admin/chat/report/review.html", context)

    def _close(self, request, report: Report, message: Message, form) -> HttpResponse:
        if not form.is_valid():
            return HttpResponseBadRequest("Hide, mute, ban or dismiss.")
        resolution = form.cleaned_data["resolution"]
        permission = CLOSING_PERMISSIONS[resolution]
        if not (request.user.has_perm("chat.change_report") and request.user.has_perm(permission)):
            raise PermissionDenied
        try:
            closed = services.close_reports(
                message=message,
                by=request.user,
                resolution=resolution,
                until=form.until(),
                reason=form.cleaned_data["note"],
            )
        except ChatError as error:
            self.message_user(request, error.detail, messages.ERROR)
            return redirect("admin:chat_report_change", report.pk)
        label = Report.Resolution(resolution).label
        self.message_user(
            request,
            f"Closed {closed} report(s) of a message by {message.author.get_username()}: {label}.",
            messages.SUCCESS if closed else messages.WARNING,
        )
        return redirect("admin:chat_report_changelist")


class ActiveFilter(admin.SimpleListFilter):
    title = "in force"
    parameter_name = "active"

    def lookups(self, request, model_admin):
        return [("yes", "in force"), ("no", "expired or lifted")]

    def queryset(self, request, queryset):
        active = RoomRestriction.objects.active().values("pk")
        if self.value() == "yes":
            return queryset.filter(pk__in=active)
        if self.value() == "no":
            return queryset.exclude(pk__in=active)
        return queryset


@admin.register(RoomRestriction)
class RoomRestrictionAdmin(admin.ModelAdmin):
    list_display = ["user", "room", "kind", "until", "in_force", "reason", "created_by", "created"]
    list_select_related = ["user", "room", "created_by"]
    list_filter = [ActiveFilter, "kind", "room"]
    search_fields = ["user__username", "reason"]
    autocomplete_fields = ["user", "room"]
    fields = ["room", "user", "kind", "until", "reason"]
    actions = ["lift"]

    @admin.display(boolean=True, description="in force")
    def in_force(self, obj: RoomRestriction) -> bool:
        return obj.lifted_at is None and (obj.until is None or obj.until > timezone.now())

    def get_readonly_fields(self, request, obj=None):
        # Once made, a restriction is only lifted (an audited action), never rewritten.
        return self.fields if obj is not None else []

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if obj is not None:
            return form

        class RestrictionForm(form):
            def clean(self):
                # services.restrict_user refuses it too; here it is a form error, not a 500.
                cleaned = super().clean()
                if cleaned.get("user") is not None:
                    try:
                        services.check_can_restrict(user=cleaned["user"], by=request.user)
                    except ChatError as error:
                        self.add_error("user", error.detail)
                return cleaned

        return RestrictionForm

    def save_model(self, request, obj: RoomRestriction, form, change: bool) -> None:
        if change:
            return
        restriction = services.restrict_user(
            room=obj.room,
            user=obj.user,
            kind=obj.kind,
            until=obj.until,
            reason=obj.reason,
            by=request.user,
        )
        obj.pk = restriction.pk

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Lift selected restrictions", permissions=["change"])
    def lift(self, request: HttpRequest, queryset: QuerySet) -> None:
        lifted = sum(
            services.lift_restriction(restriction=r, by=request.user)
            for r in queryset.select_related("room", "user")
        )
        self.message_user(request, f"Lifted {lifted} restriction(s).", messages.SUCCESS)


@admin.register(ModerationAction)
class ModerationActionAdmin(ReadOnlyAdmin):
    # The audit log: readable, never editable.

    # A message is named by its id only: the log never shows a message's text (a direct room's
    # messages are read only through their report, and each such reading is itself logged).
    list_display = ["at", "actor", "action", "room", "target", "message_ref", "reason"]
    list_select_related = ["actor", "room", "target"]
    list_filter = ["action", "room"]
    search_fields = ["actor__username", "target__username", "reason"]
    date_hierarchy = "at"
    fields = ["at", "actor", "action", "room", "target", "message_ref", "reason"]
    readonly_fields = fields

    @admin.display(description="message")
    def message_ref(self, obj: ModerationAction) -> str:
        return f"Id{obj.message_id}" if obj.message_id else "—"


# The admin's own changelist parameters (paging, sorting, search, pop-ups), not field filters.
CHANGELIST_PARAMS = {
    ALL_VAR,
    ERROR_FLAG,
    IS_FACETS_VAR,
    IS_POPUP_VAR,
    ORDER_VAR,
    PAGE_VAR,
    SEARCH_VAR,
    TO_FIELD_VAR,
}

User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class ChatUserAdmin(UserAdmin):
    """Whoever may view users but not change them (moderators, who look people up to ban or
    mute them) sees usernames only: no email, names, staff flags, groups, dates or password
    hash, and can neither search nor filter by them (a filter in the URL such as
    `?password__startswith=` would otherwise read a hash out one character at a time)."""

    def usernames_only(self, request: HttpRequest) -> bool:
        return not self.has_change_permission(request)

    def get_list_display(self, request):
        return ["username"] if self.usernames_only(request) else super().get_list_display(request)

    def get_list_filter(self, request):
        return [] if self.usernames_only(request) else super().get_list_filter(request)

    def get_search_fields(self, request):
        # Also what the autocomplete of a restriction's user field searches.
        return ["username"] if self.usernames_only(request) else super().get_search_fields(request)

    def get_fieldsets(self, request, obj=None):
        if obj is not None and self.usernames_only(request):
            return [(None, {"fields": ["username"]})]
        return super().get_fieldsets(request, obj)

    def lookup_allowed(self, lookup, value, request) -> bool:
        if self.usernames_only(request):
            return lookup.split("__")[0] == "username"
        return super().lookup_allowed(lookup, value, request)

    def changelist_view(self, request, extra_context=None):
        # Any field filter in the URL is refused plainly here (lookup_allowed would refuse it
        # too, but as a SuspiciousOperation logged with a traceback).
        if self.usernames_only(request) and set(request.GET) - CHANGELIST_PARAMS:
            return HttpResponseBadRequest("Users can only be searched by username here.")
        return super().changelist_view(request, extra_context)
