"""The relational schema (``schema``) of both SQL stores, SQLite and PostgreSQL (``tidings.backends.sql``), and
its Alembic migrations (``migrate``, ``migrations/``): one set of tables and revisions for both engines."""
