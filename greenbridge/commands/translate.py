"""``greenbridge translate FILE``: a Green Button file → CDS JSON keyed by the CDS listing names.

Every reading of the file is accounted for (docs/mapping.md §4.11): standard error gets ``N readings read, M placed``
and a count for each reason a reading was not placed, ``--report FILE`` the same as JSON. Exit status: 0 done; 1 the
file cannot be translated; 2 usage errors; 3 translated, but readings with values were lost for a reason the
translator cannot name (a bug: the output was written, and must not be trusted to be complete).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime

from greenbridge import progress


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "translate",
        help="translate a Green Button (ESPI) file into CDS JSON",
        description="Translate a Green Button (ESPI) XML file into CDS WG3-01 objects. The output is one JSON "
                    "object keyed by the CDS listing names (usage_segments, service_points, meter_devices, "
                    "bill_sections, bill_statements, accounts, service_contracts), or with --ndjson one line per "
                    "object. Large files stream: memory does not grow with the number of readings.",
    )
    parser.add_argument("file", help="the Green Button XML file ('-' reads standard input)")
    parser.add_argument("-o", "--output", help="write here instead of standard output ('-'): a regular file is "
                        "replaced atomically, a device or FIFO written to directly")
    parser.add_argument("--report", metavar="FILE",
                        help="write the reading accounting as JSON (read, placed, not placed by reason)")
    parser.add_argument("--ndjson", action="store_true",
                        help='one object per line: {"listing": "usage_segments", "object": {...}}')
    parser.add_argument("--timezone", help="IANA zone for local days and dates (default: the file's "
                        "LocalTimeParameters when they decode sanely, else UTC)")
    parser.add_argument("--custodian", default="default", help="custodian key, part of every id (default: default)")
    parser.add_argument("--id-secret", default=os.environ.get("GREENBRIDGE_ID_SECRET"),
                        help="HMAC key for ids (default: $GREENBRIDGE_ID_SECRET, else a development key)")
    parser.add_argument("--subscription", help="scope for href-based natural keys (a subscription or customer id)")
    parser.add_argument("--key-strategy", choices=("auto", "uuid", "href"), default="auto",
                        help="natural keys from urn:uuid entry ids or from self hrefs (default: auto)")
    parser.add_argument("--default-currency", help="ISO 4217 code for costs whose ReadingType names none")
    parser.add_argument("--bill-due-days", type=int, metavar="N",
                        help="utility mode: make bill statements from usage summaries, due N days after the period")
    parser.add_argument("--now", help="RFC 3339 time for cds_created/cds_modified/cds_synced (default: now)")
    progress.add_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary on standard error")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bridge.from_espi import LISTINGS, StatementPolicy, TranslateOptions, TranslationError, translate
    from bridge.from_espi.translate import DEFAULT_ID_SECRET, source_size
    from cds import jsonenc
    from espi.errors import EspiError
    from greenbridge.output import output_stream

    if args.file != "-" and not os.path.isfile(args.file):
        print(f"greenbridge translate: {args.file}: no such file", file=sys.stderr)
        return 2
    now = None
    if args.now:
        try:
            now = datetime.fromisoformat(args.now)
        except ValueError:
            print(f"greenbridge translate: --now {args.now!r} is not an RFC 3339 date-time", file=sys.stderr)
            return 2
    if args.bill_due_days is not None and args.bill_due_days < 0:
        print("greenbridge translate: --bill-due-days must not be negative", file=sys.stderr)
        return 2
    try:
        options = TranslateOptions(
            id_secret=args.id_secret or DEFAULT_ID_SECRET, custodian=args.custodian, timezone=args.timezone,
            subscription=args.subscription, key_strategy=args.key_strategy,
            default_currency=args.default_currency.upper() if args.default_currency else None, now=now,
            statements=StatementPolicy(args.bill_due_days) if args.bill_due_days is not None else None)
    except TranslationError as exc:
        print(f"greenbridge translate: {exc}", file=sys.stderr)
        return 2

    source = sys.stdin.buffer if args.file == "-" else args.file
    name = "<stdin>" if args.file == "-" else args.file
    # Bytes read with their rate and ETA while the file is translated (terminal only); the output is written after.
    bar = progress.Progress(progress.wanted(args), total=source_size(source), desc="translate")
    counts: dict[str, int] = {}
    try:
        with translate(source, options, name=name, on_read=bar.advance) as result:
            bar.close()
            with output_stream(args.output) as out:
                if args.ndjson:
                    for listing in LISTINGS:
                        prefix = b'{"listing":"' + listing.encode() + b'","object":'
                        for obj in result.listing(listing):
                            out.write(prefix + jsonenc.encode(obj) + b"}\n")
                            counts[listing] = counts.get(listing, 0) + 1
                else:
                    buffer = bytearray()
                    for position, listing in enumerate(LISTINGS):
                        out.write(("{" if position == 0 else ",") .encode() + b'"' + listing.encode() + b'":[')
                        count = 0
                        for obj in result.listing(listing):
                            if count:
                                buffer += b","
                            jsonenc.encode_into(obj, buffer, len(buffer))
                            count += 1
                            if len(buffer) > 1 << 20:
                                out.write(buffer)
                                buffer.clear()
                        out.write(buffer)
                        buffer.clear()
                        out.write(b"]")
                        counts[listing] = count
                    out.write(b"}\n")
            account = result.reading_account()
            if not args.quiet:
                _summary(name, result, counts, account)
            if args.report:
                with output_stream(args.report) as report:
                    report.write(jsonenc.encode({"source": name, "readings": account.as_dict()}) + b"\n")
    except EspiError as exc:
        bar.close()
        print(f"greenbridge translate: {exc}", file=sys.stderr)
        return 1
    return reading_status(name, account)


def reading_status(name: str, account) -> int:
    """The exit status for a translation's ``ReadingAccount``: 3 when readings with values were lost for a reason
    the translator cannot name (said on standard error even with ``--quiet``), else 0."""
    if account.unaccounted_with_values > 0:
        print(f"greenbridge translate: {name}: {account.unaccounted_with_values} readings with values were lost for "
              "a reason the translator cannot name; the output is incomplete (please report this)", file=sys.stderr)
        return 3
    return 0


def _summary(name: str, result, counts: dict[str, int], account) -> None:
    parts = ", ".join(f"{counts.get(k, 0)} {k.replace('_', ' ')}" for k in counts)
    print(f"{name}: {parts} (natural keys: {result.key_strategy})", file=sys.stderr)
    print(f"{name}: {account.summary()}", file=sys.stderr)
    for note in result.notes:
        print(f"{name}: note: {note}", file=sys.stderr)
    if result.diagnostics is not None and result.diagnostics.total:
        print(f"{name}: {result.diagnostics.total} issues repaired or ignored:", file=sys.stderr)
        for line in result.diagnostics.summary()[:12]:
            print(f"    {line}", file=sys.stderr)
