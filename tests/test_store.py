"""The store: migrations build exactly the models on both backends, and values round-trip exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import alembic_config, upgrade
from cds.store.models import Message


def test_migrations_match_models_and_downgrade(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    config = alembic_config(database_url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.check(config)  # raises if the models and the migrated schema differ
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    upgrade(engine)  # and back up again
    engine.dispose()


def test_decimals_and_datetimes_round_trip(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    moment = datetime(2026, 3, 8, 7, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-5)))
    amount = Decimal("12345678901234567890.123456789")
    with sessions() as session, session.begin():
        session.add(Message(message_id="m1", registration_id="r", type="notification", read=False, creator=None,
                            created=moment, modified=moment, status="complete", amount=amount, currency="USD"))
    with sessions() as session:
        row = session.scalar(select(Message).where(Message.message_id == "m1"))
        assert row.amount == amount and str(row.amount) == str(amount)
        assert row.created == moment and row.created.tzinfo is UTC
    with sessions() as session, session.begin(), pytest.raises(StatementError, match="naive"):
        session.add(Message(message_id="m2", registration_id="r", type="notification", read=False, creator=None,
                            created=datetime(2026, 1, 1), modified=moment, status="complete"))
        session.flush()
    engine.dispose()
