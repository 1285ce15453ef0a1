"""``greenbridge ingest FILE... --customer ID``: load Green Button files into the gateway's store."""

from __future__ import annotations

import argparse
import os
import sys

from greenbridge import progress


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="load Green Button (ESPI) files into the gateway's store for one customer",
        description="Translate Green Button (ESPI) XML files into CDS WG3-01 objects and store them for one "
                    "customer in the gateway's database (migrated first), so that the data APIs can serve them "
                    "without an upstream custodian. Objects are upserted by their stable ids: re-ingesting a file "
                    "creates nothing, an unchanged object only gets a new cds_synced, a changed one a new "
                    "cds_modified. Each file is stored in its own transaction: a file that fails leaves nothing "
                    "behind. One line per file on standard error; exit status 1 if any file failed.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="Green Button XML file(s)")
    parser.add_argument("--customer", required=True, metavar="ID", help="the customer id that owns the data")
    parser.add_argument("--config", metavar="FILE", help="gateway configuration (default: $GREENBRIDGE_CONFIG)")
    parser.add_argument("--source", metavar="NAME", help="source name recorded with the objects (default: the "
                        "file name)")
    progress.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from bridge.config import ConfigError, load_config
    from bridge.ingest import IngestError, ingest_file, translate_options_for
    from cds.store.engine import make_engine, make_sessionmaker
    from cds.store.migrate import upgrade
    from espi.errors import DocumentError, EspiError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"greenbridge ingest: {exc}", file=sys.stderr)
        return 2
    if not args.customer.strip() or len(args.customer) > 128:
        print("greenbridge ingest: --customer must be 1-128 characters", file=sys.stderr)
        return 2
    engine = make_engine(config.database_url)
    try:
        try:
            upgrade(engine)
        except SQLAlchemyError as exc:
            print(f"greenbridge ingest: database {engine.url.render_as_string(hide_password=True)}: "
                  f"{type(exc).__name__}: {exc.orig if getattr(exc, 'orig', None) else exc}", file=sys.stderr)
            return 1
        sessions = make_sessionmaker(engine)
        options = translate_options_for(config)
        status = 0
        # Bytes of all files with their rate and ETA, readings stored so far beside them (terminal only).
        with progress.Progress(progress.wanted(args), total=progress.file_sizes(args.files), desc="ingest") as bar:
            for path in args.files:
                if not os.path.isfile(path):
                    bar.write(f"greenbridge ingest: {path}: no such file")
                    status = 1
                    continue
                try:
                    with sessions() as session, session.begin():
                        report = ingest_file(session, path, customer_id=args.customer, source=args.source,
                                             options=options, on_read=bar.advance)
                except DocumentError as exc:  # prints as PATH:LINE: message
                    bar.write(f"greenbridge ingest: {exc}; nothing stored")
                    status = 1
                    continue
                except (EspiError, IngestError, SQLAlchemyError) as exc:
                    bar.write(f"greenbridge ingest: {path}: {exc}")
                    status = 1
                    continue
                bar.count("readings", report.readings or 0)
                bar.count("files", 1)
                bar.write(f"{path}: {report.summary()}")
        return status
    finally:
        engine.dispose()
