"""The relational schema shared by the SQL backends (SQLite now, PostgreSQL next) and its Alembic migrations."""
