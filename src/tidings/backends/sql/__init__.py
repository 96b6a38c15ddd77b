"""The SQL stores: ``ports.Store`` on SQLite (``sql.sqlite``) and on PostgreSQL (``sql.postgres``).

Both run SQLAlchemy Core over the one schema in ``tidings.db.schema``, migrated by the same Alembic
revisions. What is the same SQL on both lives here once: ``queries`` (statements compiled per dialect) and
``rows`` (rows to models and back). The engine packages hold only what differs on purpose: how a unit of work
runs (SQLite: one writer thread; PostgreSQL: a pool of async connections with retries), how a batch travels
(SQLite: executemany and joins to a VALUES list; PostgreSQL: ``unnest`` arrays) and how an inbox write keeps
each user's seq gap-free (SQLite: the single writer; PostgreSQL: per-user counter locks in a fixed order).

Neither engine package imports the other; both import from here, and this package imports neither.
"""
