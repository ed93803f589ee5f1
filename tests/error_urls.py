"""The site's URLs and one that fails, for the 500 page's test (ROOT_URLCONF override)."""

from django.urls import path

from chatsite.urls import urlpatterns as site_urlpatterns


def fail(request):
    raise RuntimeError("a bug in a view")


urlpatterns = [path("fail/", fail), *site_urlpatterns]
