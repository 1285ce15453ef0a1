"""``greenbridge generate``: write a deterministic synthetic Green Button feed (demo, benchmarks, tests)."""

from __future__ import annotations

import argparse
import sys
from datetime import date


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="write a deterministic synthetic Green Button feed",
        description="Write a Green Button subscription feed (ESPI 4.0, valid against the strict schemas) with "
                    "synthetic but plausible data. The same options always give the same bytes.",
    )
    parser.add_argument("-o", "--output", help="file to write (default, or '-': standard output); a regular file is "
                        "replaced atomically, a device or FIFO written to directly")
    parser.add_argument("--usage-points", type=int, default=1, metavar="N")
    parser.add_argument("--days", type=int, default=31, metavar="N")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2025, 1, 1), metavar="YYYY-MM-DD")
    parser.add_argument("--interval", type=int, default=900, metavar="SECONDS",
                        help="reading length of electric series (default 900)")
    parser.add_argument("--commodity", choices=("electric", "gas", "water", "mixed"), default="electric")
    parser.add_argument("--net-metering", action="store_true", help="add a reverse (export) series")
    parser.add_argument("--no-costs", dest="costs", action="store_false")
    parser.add_argument("--no-summaries", dest="summaries", action="store_false")
    parser.add_argument("--quality-gaps", action="store_true",
                        help="mark some readings estimated and leave one reading a day out")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trait", action="append", default=[], metavar="NAME", dest="traits",
                        help="add a quirk of real files (repeatable): " + ", ".join(_trait_names()))
    parser.set_defaults(run=run)


def _trait_names() -> list[str]:
    from espi.generate import TRAITS

    return list(TRAITS)


def run(args: argparse.Namespace) -> int:
    from espi.generate import FeedSpec, write_feed
    from greenbridge.output import output_stream

    try:
        spec = FeedSpec(usage_points=args.usage_points, days=args.days, start=args.start, interval=args.interval,
                        commodity=args.commodity, net_metering=args.net_metering, costs=args.costs,
                        summaries=args.summaries, quality_gaps=args.quality_gaps, seed=args.seed,
                        traits=frozenset(args.traits))
    except ValueError as exc:
        print(f"greenbridge generate: {exc}", file=sys.stderr)
        return 2
    with output_stream(args.output, text=True) as out:
        totals = write_feed(out, spec)
    if args.output not in (None, "-"):
        print(f"{args.output}: {totals.readings} readings for {spec.usage_points} usage points", file=sys.stderr)
    return 0
