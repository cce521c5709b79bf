"""Hearth's settings: everything that differs between machines comes from the environment."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from shop.database import database_url, django_database, session_timeouts

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_seconds(name: str, default: float) -> float:
    """A duration in seconds from the environment; decimals allowed."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number of seconds, got {raw!r}") from exc
    if value < 0:
        raise ImproperlyConfigured(f"{name} must not be negative, got {raw!r}")
    return value


DEBUG = env_bool("DEBUG", False)


def local_secret_key() -> str:
    """A random key kept in var/secret_key, so a single machine needs no SECRET_KEY set.

    Several web processes on several machines must share one: set SECRET_KEY there.
    """
    path = BASE_DIR / "var" / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a private name, then linked into place: a process
        # starting at the same moment sees no key or the whole key, never half.
        tmp = path.with_name(f"secret_key.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race; use its key
        finally:
            tmp.unlink()
    return path.read_text().strip()


SECRET_KEY = os.environ.get("SECRET_KEY") or local_secret_key()
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "csp",
    "queueing",
    "shop",
    "lab",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it answers a locked-out sign-in with 429.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # First: refuses a sign-in from a client that has failed too often.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Sign-in guesses: after this many failures for one username from one address, 429
# with Retry-After until the cool-off ends (counted in the database: every web process).
AXES_FAILURE_LIMIT = int(os.environ.get("HEARTH_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = env_seconds("HEARTH_LOGIN_COOLOFF", 900) / 3600  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "shop.refusal.login_locked_out"
AXES_VERBOSE = False

ROOT_URLCONF = "shop.urls"
ASGI_APPLICATION = "shop.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "shop.pages.nav_kitchens",  # the signed-in user's kitchens in the top bar
            ],
        },
    },
]

# Every connection's timeouts (seconds; 0 turns one off), so a process frozen or cut off
# inside a transaction cannot hold others up for longer than these: PostgreSQL cancels a
# statement that waits for a lock past the first or runs past the second, and ends a
# session left idle inside a transaction past the third, releasing its locks.
HEARTH_DB_LOCK_TIMEOUT = env_seconds("HEARTH_DB_LOCK_TIMEOUT", 5)
HEARTH_DB_STATEMENT_TIMEOUT = env_seconds("HEARTH_DB_STATEMENT_TIMEOUT", 30)
HEARTH_DB_IDLE_IN_TRANSACTION_TIMEOUT = env_seconds("HEARTH_DB_IDLE_IN_TRANSACTION_TIMEOUT", 10)
# `manage.py migrate` lifts the statement timeout to this (0: none): an index build runs long.
HEARTH_DB_MIGRATE_STATEMENT_TIMEOUT = env_seconds("HEARTH_DB_MIGRATE_STATEMENT_TIMEOUT", 0)

# The engine's named statements (queueing.sql) are prepared on each connection after this
# many runs, so PostgreSQL plans a claim once instead of on every claim (planning cost
# twice the claim itself). 0 turns it off (every connection of the process, the heartbeat
# pool and the waker's too): behind PgBouncer in transaction mode, keep 0 unless it is
# 1.22 or later with max_prepared_statements above 0.
HEARTH_DB_PREPARE_THRESHOLD = int(os.environ.get("HEARTH_DB_PREPARE_THRESHOLD", "5"))

if env_bool("HEARTH_NO_DATABASE", False):
    # An HTTP-only process (the outlet agent): never start the embedded server for it.
    DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "unused"}}
else:
    DATABASES = {
        "default": django_database(
            database_url(),
            timeouts=session_timeouts(
                lock=HEARTH_DB_LOCK_TIMEOUT,
                statement=HEARTH_DB_STATEMENT_TIMEOUT,
                idle_in_transaction=HEARTH_DB_IDLE_IN_TRANSACTION_TIMEOUT,
            ),
            prepare_threshold=HEARTH_DB_PREPARE_THRESHOLD or None,
        )
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One process fans events out to its own sockets (shop.live, fed by the engine's
# listener); channels_redis can take over across processes.
CHANNEL_LAYERS = {
    "default": {
        # A layer for one process's sockets, without Channels' per-call expiry walk;
        # group membership does not lapse (kitchen screens stay open for days).
        "BACKEND": "shop.live.ProcessChannelLayer",
        "CONFIG": {
            # A full socket queue silently drops messages: give a busy screen room.
            "capacity": 10_000,
        },
    }
}
# Staff sockets (kitchen, ops) check their user's access again this often, and on each heartbeat.
HEARTH_SOCKET_RECHECK = env_seconds("HEARTH_SOCKET_RECHECK", 3)
# The LISTEN connection's reconnect backoff: doubles from MIN up to MAX (seconds).
HEARTH_LISTENER_RETRY_MIN = env_seconds("HEARTH_LISTENER_RETRY_MIN", 0.1)
HEARTH_LISTENER_RETRY_MAX = env_seconds("HEARTH_LISTENER_RETRY_MAX", 5)
# Prometheus reads /metrics with "Authorization: Bearer <this>"; empty turns /metrics off.
HEARTH_METRICS_TOKEN = os.environ.get("HEARTH_METRICS_TOKEN", "")
# How often each web process writes its sockets and lag for /metrics; a process silent
# for three of these counts as gone. Set the same on every web machine.
HEARTH_WEB_METRICS_INTERVAL = env_seconds("HEARTH_WEB_METRICS_INTERVAL", 5)
# Web processes `manage.py up` runs on its one port (each with its own LISTEN connection).
HEARTH_WEB_PROCESSES = int(os.environ.get("HEARTH_WEB_PROCESSES", "0")) or os.cpu_count() or 1
# Daphne's access log (a file path, "-" for the console); empty: none, the default, since
# every line is written by the process's one event loop (a proxy in front logs requests).
HEARTH_ACCESS_LOG = os.environ.get("HEARTH_ACCESS_LOG", "")
# A web process runs a full garbage collection after this many collections of the middle
# generation (Python's default: 10), and freezes what it loaded (shop.collector); 0 leaves
# Python's collector as it is.
HEARTH_GC_FULL_AFTER = int(os.environ.get("HEARTH_GC_FULL_AFTER", "1000"))
# The hot API endpoints' short path (shop.api.fast); 0 serves them like every page, for
# `bench web` to measure the difference.
HEARTH_API_FAST = env_bool("HEARTH_API_FAST", True)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "var" / "static"

# Bodies larger than this are refused before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the kitchen screen's fetch() reads it for its header
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Behind HTTPS (a TLS-terminating proxy that sets X-Forwarded-Proto): secure cookies,
# HSTS and redirects to https. Off by default so a laptop on http://127.0.0.1 works.
HEARTH_HTTPS = env_bool("HEARTH_HTTPS", False)
if HEARTH_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("HEARTH_HSTS_SECONDS", str(365 * 86_400)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HEARTH_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("HEARTH_HSTS_PRELOAD", False)
    if env_bool("HEARTH_HSTS_PRELOAD", False) is False:
        # check --deploy asks for preload (W021); it is a commitment a site makes on purpose.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]

# Content-Security-Policy on every page (django-csp): scripts and styles only from this
# site's files, no inline code; websockets and fetch() to this site only.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "hearth": {
            "handlers": ["console"],
            "level": os.environ.get("HEARTH_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
        "django.request": {"handlers": ["console"], "level": "ERROR"},
    },
}

# --- The queue's timings and rules (seconds; decimals allowed) -----------------
HEARTH_HEARTBEAT_INTERVAL = env_seconds("HEARTH_HEARTBEAT_INTERVAL", 5)
HEARTH_HEARTBEAT_TIMEOUT = env_seconds("HEARTH_HEARTBEAT_TIMEOUT", 15)
HEARTH_NOTIFIER_TICK = env_seconds("HEARTH_NOTIFIER_TICK", 1)
# The leading notifier's lease, renewed every tick: a standby takes over once it lapses
# (a leader killed, frozen or cut off). Several ticks long, so a slow tick keeps it.
HEARTH_LEADER_LEASE = env_seconds("HEARTH_LEADER_LEASE", 5)
HEARTH_LEASE_SECONDS = env_seconds("HEARTH_LEASE_SECONDS", 120)
# A down (or new) outlet must keep heartbeating without a break this long, and at least
# HEARTH_FLAP_GUARD_BEATS times, before it takes orders again: several heartbeats, never one.
HEARTH_FLAP_GUARD = env_seconds("HEARTH_FLAP_GUARD", 3 * HEARTH_HEARTBEAT_INTERVAL)
HEARTH_FLAP_GUARD_BEATS = int(os.environ.get("HEARTH_FLAP_GUARD_BEATS", "3"))
if HEARTH_FLAP_GUARD <= HEARTH_HEARTBEAT_INTERVAL or HEARTH_FLAP_GUARD_BEATS < 2:
    raise ImproperlyConfigured(
        f"HEARTH_FLAP_GUARD ({HEARTH_FLAP_GUARD:g}s) must exceed HEARTH_HEARTBEAT_INTERVAL "
        f"({HEARTH_HEARTBEAT_INTERVAL:g}s) and HEARTH_FLAP_GUARD_BEATS "
        f"({HEARTH_FLAP_GUARD_BEATS}) be at least 2: one heartbeat must never bring an "
        "outlet back (default: 3 x the interval, 3 heartbeats)"
    )
HEARTH_MAX_ATTEMPTS = int(os.environ.get("HEARTH_MAX_ATTEMPTS", "3"))
# Bounded loads: no outlet takes more than (1 + epsilon) x its weighted share.
HEARTH_RING_EPSILON = env_seconds("HEARTH_RING_EPSILON", 0.25)
# Priority: sort_key = queued_at - boost. A boosted order jumps ahead of newer
# orders but never ahead of one that has already waited longer than its boost.
HEARTH_BOOST_QUICK = env_seconds("HEARTH_BOOST_QUICK", 120)
HEARTH_BOOST_RUSH = env_seconds("HEARTH_BOOST_RUSH", 300)
# An order whose every item prepares within this many seconds is "quick".
HEARTH_QUICK_PREP_SECONDS = env_seconds("HEARTH_QUICK_PREP_SECONDS", 30)
# What happens to an outlet's open orders when it goes down, per kind.
HEARTH_ON_OUTLET_DOWN = {"delivery": "reroute", "takeaway": "cancel"}
HEARTH_STATIONS_PER_OUTLET = int(os.environ.get("HEARTH_STATIONS_PER_OUTLET", "2"))
# Outlets per page of the operations screen's table (those that need a look come first).
HEARTH_OPS_PAGE_SIZE = max(1, int(os.environ.get("HEARTH_OPS_PAGE_SIZE", "50")))
# Delivery zones the order form offers (comma-separated); each must match shop.ordering's pattern.
HEARTH_DELIVERY_ZONES = [
    z.strip() for z in os.environ.get("HEARTH_DELIVERY_ZONES", "").split(",") if z.strip()
]
for _zone in HEARTH_DELIVERY_ZONES:
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9 -]{0,38}[A-Za-z0-9])?", _zone):
        raise ImproperlyConfigured(f"HEARTH_DELIVERY_ZONES: {_zone!r} is not a zone (e.g. N1)")

# Order placement (API and form) per client address: at most this many per window; 0: off.
HEARTH_ORDER_RATE_LIMIT = int(os.environ.get("HEARTH_ORDER_RATE_LIMIT", "60"))
HEARTH_ORDER_RATE_WINDOW = env_seconds("HEARTH_ORDER_RATE_WINDOW", 600)
