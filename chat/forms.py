from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import authenticate
from django.contrib.auth.forms import AdminUserCreationForm as DjangoAdminUserCreationForm
from django.contrib.auth.forms import (
    AuthenticationForm,
    PasswordChangeForm,
    UserCreationForm,
    UsernameField,
)

from . import accounts


class RoomForm(forms.Form):
    """The lobby's "Start a room" form; the name rule itself is chat.services.clean_room_name."""

    name = forms.CharField(max_length=80, strip=True)
    kind = forms.ChoiceField(
        choices=[
            ("public", "Public: anyone can find and read it"),
            ("private", "Private: members only"),
        ],
        required=False,
        initial="public",
        widget=forms.RadioSelect,
    )
    topic = forms.CharField(max_length=200, required=False, strip=True)


class ThrottleMessageMixin:
    """For login forms: say so when the login throttle (chat.accounts) refused the attempt.

    The throttle itself is an authentication backend, so it holds for every door whether or not
    its form has this; the mixin only turns "wrong password" into the real reason.
    """

    def get_invalid_login_error(self):
        return accounts.login_throttled_error(self.request) or super().get_invalid_login_error()


class LoginForm(ThrottleMessageMixin, AuthenticationForm):
    """The site's login form (/accounts/login/)."""


class AdminLoginForm(ThrottleMessageMixin, AdminAuthenticationForm):
    """The admin's login form (/admin/login/)."""


class SafeUsernameField(UsernameField):
    """A username without bidi controls or invisible characters (before Django's own check,
    so the person reads why)."""

    def validate(self, value) -> None:
        super().validate(value)
        accounts.check_username_characters(value)


class UsernameRulesMixin:
    """For forms that create accounts: no look-alike of an existing name, no reserved name.

    Pair with `SafeUsernameField` for the username (in the form's Meta.field_classes).
    """

    def clean_username(self) -> str:
        # Django's first: no name that differs only in case (it answers None for one).
        username = super().clean_username()
        if username is not None:
            accounts.check_username_available(username)
        return username


class SignupForm(UsernameRulesMixin, UserCreationForm):
    """The site's sign-up form (/accounts/signup/)."""

    class Meta(UserCreationForm.Meta):
        field_classes = {"username": SafeUsernameField}


class AdminUserCreationForm(UsernameRulesMixin, DjangoAdminUserCreationForm):
    """The admin's "add user" form with the same rules (for a UserAdmin's `add_form`)."""

    class Meta(DjangoAdminUserCreationForm.Meta):
        field_classes = {"username": SafeUsernameField}


class DeleteAccountForm(forms.Form):
    """Confirm with the password; the check goes through the login throttle like any login."""

    password = forms.CharField(
        label="Your password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def __init__(self, *args, request, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        user = self.request.user
        checked = authenticate(self.request, username=user.get_username(), password=password)
        if checked is None or checked.pk != user.pk:
            raise accounts.login_throttled_error(self.request) or forms.ValidationError(
                "That is not your password.", code="password_incorrect"
            )
        return password


class ThrottledPasswordChangeForm(PasswordChangeForm):
    """Django's password change, its old password checked through `authenticate()`, so the
    login throttle counts and refuses here as at every other door (Django's own form calls
    `check_password`, which no backend sees)."""

    def __init__(self, *args, request, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

    def clean_old_password(self) -> str:
        password = self.cleaned_data["old_password"]
        user = self.user
        checked = authenticate(self.request, username=user.get_username(), password=password)
        if checked is None or checked.pk != user.pk:
            raise accounts.login_throttled_error(self.request) or forms.ValidationError(
                self.error_messages["password_incorrect"], code="password_incorrect"
            )
        return password
