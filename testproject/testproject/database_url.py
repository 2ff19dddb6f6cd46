"""Turn a ``DATABASE_URL`` into an entry of Django's ``DATABASES`` setting."""

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

POSTGRES_SCHEMES = frozenset({"postgres", "postgresql"})


def parse_database_url(url: str) -> dict[str, Any]:
    """Return the database settings that a ``postgres://`` URL describes."""
    parts = urlsplit(url)

    if parts.scheme not in POSTGRES_SCHEMES:
        raise ImproperlyConfigured(
            f"DATABASE_URL {redact_password(url)!r} is not supported; "
            "use a postgres:// or postgresql:// URL."
        )

    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured(
            f"DATABASE_URL {redact_password(url)!r} names no database; "
            "add one after the host, as in postgres://user@host/name."
        )

    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(
            f"DATABASE_URL {redact_password(url)!r} has a port that is not "
            "a number between 0 and 65535."
        ) from None

    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        # A percent-encoded host is a Unix socket directory.
        "HOST": unquote(parts.hostname or ""),
        "PORT": str(port) if port is not None else "",
        # Query parameters such as sslmode are libpq connection options.
        "OPTIONS": dict(parse_qsl(parts.query)),
    }


def redact_password(url: str) -> str:
    """Return ``url`` with its password masked, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url

    credentials, _, host = parts.netloc.rpartition("@")
    user = credentials.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()
