"""Alembic environment: migrates the connection handed over by ``tidings.db.migrate``.

Run from code only (see ``tidings.db.migrate``); with ``-x url=...`` the ``alembic`` command works too, for
developers writing a new revision against a scratch database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from tidings.db.schema import metadata


def _run(connection: object) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database with: alembic -x url=sqlite:///scratch.db ...")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        _run(connection)


def run_offline() -> None:
    url = context.get_x_argument(as_dictionary=True).get("url", "sqlite://")
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
