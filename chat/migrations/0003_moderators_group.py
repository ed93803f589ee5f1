from django.db import migrations

MODERATOR_PERMISSIONS = [
    ("chat", "view_room"),
    ("chat", "view_message"),
    ("chat", "moderate_message"),
    ("chat", "view_roomrestriction"),
    ("chat", "add_roomrestriction"),
    ("chat", "change_roomrestriction"),
    ("chat", "view_moderationaction"),
    ("auth", "view_user"),
]


def create_group(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations; moderation needs them now.
    for app_label in ("auth", "chat"):
        app_config = apps.get_app_config(app_label)
        # Migration-state app stubs lack `models_module`, which create_permissions checks.
        stub = not hasattr(app_config, "models_module")
        if stub:
            app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        if stub:
            del app_config.models_module
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Moderators")
    group.permissions.set(
        [
            Permission.objects.get(content_type__app_label=app, codename=codename)
            for app, codename in MODERATOR_PERMISSIONS
        ]
    )


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="Moderators").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("chat", "0002_moderation"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
