"""Schema migrations with Alembic, driven from code (no alembic.ini): ``upgrade(engine)`` brings a database to head.

Every process migrates the store as it starts (gateways, workers, beat, the CLI). On PostgreSQL, where a deployment
starts several of them at once, the upgrade holds a transaction-level advisory lock: the first migrates, the others
wait for its commit and then find the schema at head (two concurrent ``CREATE TABLE`` would fail otherwise).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: The advisory lock key of schema upgrades on PostgreSQL (any constant no other code of ours uses).
UPGRADE_LOCK = 0x67620001


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's ini interpolation treats % specially; URLs may contain percent-encoded passwords.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade to ``revision``; returns the revision the store was at when this upgrade began (None: empty)."""
    from alembic.runtime.migration import MigrationContext

    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK})
        found = MigrationContext.configure(connection).get_current_revision()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return found
