from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Signal receivers: login failures counted for the throttle, the look-alike index.
        from . import accounts  # noqa: F401
