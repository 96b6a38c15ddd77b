"""Schema migrations, run from code: users never see an ``alembic.ini``.

``upgrade(url)`` brings a database to the newest revision and is a no-op when it is there already, so every
process may call it on start. On SQLite the whole upgrade is one ``BEGIN IMMEDIATE`` transaction: two
processes starting on a fresh file at once (``tidings serve`` and ``tidings apps create``) take turns, and
the second finds nothing to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, make_url, pool

SCRIPT_LOCATION = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5000


def config(connection: Connection | None = None) -> Config:
    """An Alembic config for our migrations; ``connection`` (if given) is the one env.py migrates."""
    cfg = Config()
    # ``%`` is interpolation syntax in Alembic's ini-backed options.
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade_connection(connection: Connection) -> None:
    """Upgrades to head on a connection the caller owns; its open transaction holds the whole upgrade."""
    command.upgrade(config(connection), "head")


def upgrade(url: str) -> None:
    """Upgrade the database at ``url`` to head, in one transaction where the database allows it."""
    engine = _engine(url)
    try:
        with engine.begin() as connection:
            upgrade_connection(connection)
    finally:
        engine.dispose()


def _engine(url: str) -> Engine:
    engine = create_engine(url, poolclass=pool.NullPool)
    if make_url(url).get_backend_name() == "sqlite":
        _sqlite_explicit_transactions(engine)
    return engine


def _sqlite_explicit_transactions(engine: Engine) -> None:
    """pysqlite does not open transactions before DDL; take over, and take the write lock up front."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
