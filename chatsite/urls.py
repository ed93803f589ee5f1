from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from chat import views as chat_views
from chat.forms import AdminLoginForm, LoginForm

# The admin's login form tells a throttled person why (the throttle itself is a backend).
admin.site.login_form = AdminLoginForm

urlpatterns = [
    # One door for changing one's password (the site's, with the login throttle): the admin's
    # own form checks the old password without it.
    path("admin/password_change/", RedirectView.as_view(pattern_name="password_change")),
    path(
        "admin/password_change/done/",
        RedirectView.as_view(pattern_name="password_change_done"),
    ),
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(authentication_form=LoginForm),
        name="login",
    ),
    path(
        "accounts/password_reset/",
        chat_views.PasswordResetView.as_view(),
        name="password_reset",
    ),
    path(
        "accounts/password_change/",
        chat_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("chat.urls")),
]
