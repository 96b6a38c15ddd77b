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


def test_0007_backfills_the_counters_and_types_of_existing_rows(tmp_path: Path) -> None:
    """An inbox written before 0007: its users' counters equal a COUNT of their shown rows afterwards (replaced
    rows do not count), and each row's type comes from its stored notification."""
    from alembic import command

    url = url_of(tmp_path / "t.db")
    engine = migrate._engine(url)
    with engine.begin() as conn:
        command.upgrade(migrate.config(conn), "0006")
    rows = [  # (user, seq, read_at, seen_at, replaced_by)
        ("alice", 1, None, None, 2),
        ("alice", 2, None, None, None),
        ("alice", 3, 5.0, None, None),
        ("alice", 4, 5.0, 5.0, None),
        ("bob", 1, None, 5.0, None),
    ]
    with engine.begin() as conn:
        for user, seq, read_at, seen_at, replaced_by in rows:
            conn.execute(
                text(
                    "INSERT INTO inbox (app, user_id, seq, id, event_id, payload, created_at, read_at, seen_at,"
                    " replaced_by) VALUES ('a', :u, :s, :i, :i, :p, 1.0, :r, :n, :b)"
                ),
                {
                    "u": user,
                    "s": seq,
                    "i": f"{user}{seq}",
                    "p": b'{"type":"post.liked","seq":1}',
                    "r": read_at,
                    "n": seen_at,
                    "b": replaced_by,
                },
            )
        conn.execute(
            text("INSERT INTO user_seqs (app, user_id, last_seq) VALUES ('a', 'alice', 4), ('a', 'bob', 1)")
        )
    engine.dispose()
    migrate.upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        counters = conn.execute(
            text("SELECT user_id, unread, unseen, archived FROM user_seqs ORDER BY 1")
        ).all()
        types = conn.execute(text("SELECT DISTINCT type, kind FROM inbox")).all()
    engine.dispose()
    assert [tuple(r) for r in counters] == [("alice", 1, 2, 0), ("bob", 1, 0, 0)]
    assert [tuple(r) for r in types] == [("post.liked", "notification")]
