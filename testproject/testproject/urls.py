"""URLs of the demo project: only the admin, where tasks are inspected."""

from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("admin/", admin.site.urls),
]
