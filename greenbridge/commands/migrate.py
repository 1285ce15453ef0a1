"""``greenbridge migrate``: bring the store's schema to this version's head (Alembic, cds/store/migrations).

Every process migrates at start anyway; this command does it as a step of its own (an upgrade's first step, a
compose one-shot service), and ``--check`` only reports: exit 0 when the store is at head, 1 when it is behind (or
ahead: a newer version migrated it), 2 on a configuration or database error.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="migrate the store's schema to this version (or check it with --check)",
        description="Upgrade the store (database_url / GREENBRIDGE_DATABASE_URL) to the newest schema of this "
                    "version; print the revision before and after. On PostgreSQL concurrent upgrades wait for "
                    "each other. Back up the store first (docs/operations.md, 'Upgrading').",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default $GREENBRIDGE_CONFIG)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing: exit 1 unless the store is at this version's head")
    parser.set_defaults(run=run)


def current_revision(engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(database_url: str) -> str:
    from alembic.script import ScriptDirectory

    from cds.store.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from bridge.config import ConfigError, load_config
    from cds.store.engine import make_engine
    from cds.store.migrate import upgrade

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"greenbridge migrate: {error}", file=sys.stderr)
        return 2
    engine = make_engine(config.database_url)
    store = engine.url.render_as_string(hide_password=True)
    try:
        head = head_revision(config.database_url)
        if args.check:
            before = current_revision(engine)
            print(f"{store}: at {before or 'an empty schema'}; this version's head is {head}")
            return 0 if before == head else 1
        before = upgrade(engine)  # read under the upgrade's lock: another process may have just migrated
        after = current_revision(engine)
    except SQLAlchemyError as error:
        print(f"greenbridge migrate: {store}: {type(error).__name__}: {getattr(error, 'orig', None) or error}",
              file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    change = "already at head" if before == after else f"migrated from {before or 'an empty schema'}"
    print(f"{store}: {change}: {after}")
    return 0
