"""The store: SQLAlchemy models, engine setup and Alembic migrations (SQLite by default, PostgreSQL in production)."""
