"""``greenbridge status``: the ops dashboard in a terminal (docs/operations.md "The ops dashboard").

The same document as the gateway's ``/ops/status`` (bridge.ops.collect_status: the store, the broker's queue
lengths and a ping of the workers), printed as tables, or as JSON with ``--json``. Exit status 0; 1 when something
needs the operator (the broker unreachable, no worker answering while jobs wait, dead jobs); 2 on a configuration
error. The store is the gateway's: ``--config`` (or ``$GREENBRIDGE_CONFIG``) and the ``GREENBRIDGE_*`` environment.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

STATES = ("queued", "running", "deferred", "failed", "dead")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status",
        help="the bridge at a glance: queues, workers, jobs, custodians, grants (as /ops)",
        description="Print what the ops dashboard (/ops) shows: queue lengths, workers online, jobs by custodian and "
                    "kind with the oldest waiting and the last error, custodians' health, grants by status, "
                    "deferred requests, dead jobs and the latest errors. Exit status 1 when something needs the "
                    "operator (broker down, no worker while jobs wait, dead jobs).",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default $GREENBRIDGE_CONFIG)")
    parser.add_argument("--json", action="store_true", help="the JSON document of /ops/status")
    parser.add_argument("--no-ping", dest="ping", action="store_false",
                        help="do not ask the workers (saves the one-second ping)")
    parser.set_defaults(run=run)


def attention(status: dict[str, Any]) -> list[str]:
    """What needs the operator, one line each (empty: all is well)."""
    problems = []
    broker = status["broker"]
    if not broker["reachable"]:
        problems.append(f"the broker does not answer: {broker.get('error')}")
    waiting = sum(row["queued"] + row["failed"] for row in status["jobs"])
    if status["workers"] is not None and not status["workers"] and waiting:
        problems.append(f"no worker answered, and {waiting} job(s) wait")
    if status["dead"]["count"]:
        problems.append(f"{status['dead']['count']} dead job(s): see the list, fix the cause, "
                        "then `greenbridge jobs retry JOB_ID`")
    return problems


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(value) if value is not None else "" for value in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def render(status: dict[str, Any]) -> str:
    out = [f"greenbridge status at {status['generated']}"]
    broker = status["broker"]
    if broker["reachable"]:
        queues = ", ".join(f"{name} {length}" for name, length in broker["queues"].items())
        out.append(f"\nqueues: {queues}; taken, not acknowledged: {broker['unacked']}")
    else:
        out.append(f"\nbroker: NOT REACHABLE ({broker.get('error')})")
    workers = status["workers"]
    if workers is None:
        out.append("workers: not asked")
    elif not workers:
        out.append("workers: none answered")
    else:
        out.append("workers: " + "; ".join(f"{w['name']} ({','.join(w['queues'])})" for w in workers))
    if status["jobs"]:
        out.append("\njobs (done: in the last hour)")
        out.append(_table(["custodian", "kind", *STATES, "done", "oldest waiting", "last error"],
                          [[row["custodian"] or "-", row["kind"], *(row[s] for s in STATES), row["done_last_hour"],
                            row["oldest_waiting"], (row["last_error"] or "")[:60]] for row in status["jobs"]]))
    else:
        out.append("\njobs: none")
    if status["custodians"]:
        out.append("\ncustodians (requests/errors: the last hour)")
        out.append(_table(["custodian", "last success", "latency ms", "requests", "errors", "last notification",
                           "last error"],
                          [[c["id"], c["last_success"] or "never", c["last_latency_ms"], c["requests_last_hour"],
                            c["errors_last_hour"], c["last_notification"] or "never", (c["last_error"] or "")[:60]]
                           for c in status["custodians"]]))
    grants = ", ".join(f"{name} {count}" for name, count in sorted(status["grants"].items())) or "none"
    out.append(f"\ngrants: {grants}")
    readings = sum(minute["readings"] for minute in status["activity"])
    requests = sum(minute["upstream_requests"] for minute in status["activity"])
    errors = sum(minute["upstream_errors"] for minute in status["activity"])
    out.append(f"last hour: {readings} readings stored, {requests} upstream requests, {errors} errors")
    out.append(f"deferred, waiting for a notification: {status['deferred']['count']}")
    if status["dead"]["jobs"]:
        out.append(f"\ndead jobs ({status['dead']['count']}; newest first):")
        out += [f"  {job['job_id']}  {job['kind']}  {job['custodian'] or '-'}  {(job['last_error'] or '')[:100]}"
                for job in status["dead"]["jobs"][:20]]
    problems = attention(status)
    out.append("\n" + ("needs attention:\n" + "\n".join(f"  - {p}" for p in problems) if problems else "all well"))
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from bridge.config import ConfigError, load_config
    from bridge.ops import collect_status
    from cds.store.engine import make_engine, make_sessionmaker
    from cds.store.migrate import upgrade

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"greenbridge status: {error}", file=sys.stderr)
        return 2
    engine = make_engine(config.database_url)
    try:
        upgrade(engine)
        status = collect_status(make_sessionmaker(engine), config, ping_workers=args.ping)
    finally:
        engine.dispose()
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else render(status))
    return 1 if attention(status) else 0
