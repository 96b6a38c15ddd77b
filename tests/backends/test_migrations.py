"""The Alembic migrations build exactly ``tidings.db.schema``, and running them again changes nothing."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from tidings.db import migrate
from tidings.db.schema import metadata


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def test_a_fresh_database_migrates_to_exactly_the_schema(tmp_path: Path) -> None:
    """Tables, columns, types, keys and indexes of a migrated file match the metadata the code queries."""
    migrate.upgrade(url_of(tmp_path / "t.db"))
    engine = create_engine(url_of(tmp_path / "t.db"))
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        indexes = {ix["name"]: ix["unique"] for ix in inspect(conn).get_indexes("event_log")}
        head = ScriptDirectory.from_config(migrate.config()).get_current_head()
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
    engine.dispose()
    assert indexes == {"ix_event_log_lane_offset": False, "ux_event_log_idempotency": True}


def test_upgrading_twice_is_a_no_op(tmp_path: Path) -> None:
    """Every process runs the migrations on start: on a current database they keep the data and do nothing."""
    url = url_of(tmp_path / "t.db")
    migrate.upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO user_seqs (app, user_id, last_seq) VALUES ('a', 'u', 7)"))
    migrate.upgrade(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT last_seq FROM user_seqs")).scalar() == 7
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()


def test_two_processes_migrating_a_fresh_file_at_once_both_succeed(tmp_path: Path) -> None:
    """`tidings serve` and `tidings apps create` started together on new data: both come up."""
    url = url_of(tmp_path / "t.db")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate.upgrade(url)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    engine = create_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()
