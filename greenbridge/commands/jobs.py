"""``greenbridge jobs``: the operator's view of the durable jobs table (docs/operations.md), and retries.

* ``jobs`` (or ``jobs summary``): how many jobs of each kind are in each state, the oldest waiting job, the
  latest errors, and the latest warnings of jobs that succeeded (e.g. a bulk whose entries could not all be
  placed: how many, and why);
* ``jobs list [--state S] [--kind K] [--warnings] [--limit N] [--json]``: the jobs themselves, newest first, with
  the last run's warning or result (done) or error (the others); ``--json`` gives all of them;
* ``jobs retry JOB_ID…``: a ``dead`` or ``failed`` job goes back to ``queued`` with a fresh series of attempts
  (after the cause was fixed: a host key rotated, a custodian back up) and is published to the workers.

The store is the gateway's: ``--config`` (or ``$GREENBRIDGE_CONFIG``) and the ``GREENBRIDGE_*`` environment.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

_PROG = "greenbridge jobs"
STATES = ("queued", "running", "deferred", "failed", "dead", "done")  # workers.jobs.STATES (import-free --help)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "jobs",
        help="the worker jobs: counts by kind and state, listings, retries",
        description="Operator commands on the durable jobs table: a summary (default), a listing, and retries of "
                    "dead or failed jobs.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default $GREENBRIDGE_CONFIG)")
    parser.set_defaults(run=run_summary)
    actions = parser.add_subparsers(dest="jobs_action", metavar="ACTION")
    summary = actions.add_parser("summary", help="counts by kind and state (the default)")
    summary.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML configuration file")
    summary.set_defaults(run=run_summary)
    listing = actions.add_parser("list", help="jobs, newest first")
    listing.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML configuration file")
    listing.add_argument("--state", choices=STATES, help="only jobs in this state")
    listing.add_argument("--kind", help="only jobs of this kind (fetch_subscription, fetch_bulk, …)")
    listing.add_argument("--warnings", action="store_true", help="only jobs that left a warning")
    listing.add_argument("--limit", type=int, default=50, help="at most N jobs (default 50)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=run_list)
    retry = actions.add_parser("retry", help="put dead or failed jobs back in the queue")
    retry.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML configuration file")
    retry.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    retry.set_defaults(run=run_retry)


def _sessions(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from bridge.config import load_config
    from cds.store.engine import make_engine, make_sessionmaker
    from cds.store.migrate import upgrade

    config = load_config(getattr(args, "config", None))
    engine = make_engine(config.database_url)
    upgrade(engine)
    return config, engine, make_sessionmaker(engine)


def _fail(message: str) -> int:
    print(f"{_PROG}: {message}", file=sys.stderr)
    return 2


def run_summary(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from bridge.config import ConfigError
    from cds.store.models import Job

    try:
        _config, engine, sessions = _sessions(args)
    except ConfigError as error:
        return _fail(str(error))
    try:
        with sessions() as session:
            counts = session.execute(select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)).all()
            oldest = session.scalars(select(Job).where(Job.state.in_(("queued", "failed", "deferred")))
                                     .order_by(Job.created).limit(1)).first()
            errors = session.scalars(select(Job).where(Job.state.in_(("failed", "dead")))
                                     .order_by(Job.modified.desc()).limit(5)).all()
            warnings = session.scalars(select(Job).where(Job.warning.is_not(None))
                                       .order_by(Job.modified.desc()).limit(5)).all()
    finally:
        engine.dispose()
    table: dict[str, dict[str, int]] = {}
    for kind, state, count in counts:
        table.setdefault(kind, {})[state] = count
    if not table:
        print("no jobs")
        return 0
    width = max(len(kind) for kind in table)
    print(f"{'kind':<{width}}  " + "  ".join(f"{state:>8}" for state in STATES))
    for kind in sorted(table):
        print(f"{kind:<{width}}  " + "  ".join(f"{table[kind].get(state, 0):>8}" for state in STATES))
    if oldest is not None:
        print(f"\noldest waiting: {oldest.job_id} ({oldest.kind}, {oldest.state}) since {oldest.created.isoformat()}")
    for job in errors:
        print(f"{job.state:>6} {job.job_id} {job.kind}: {(job.last_error or '')[:160]}")
    if warnings:
        print("\nwarnings (the job succeeded, but not everything was stored):")
    for job in warnings:
        print(f"{job.state:>6} {job.job_id} {job.kind}: {job.warning[:400]}")
    return 0


def _as_json(job: Any) -> dict[str, Any]:
    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {"job_id": job.job_id, "kind": job.kind, "queue": job.queue, "state": job.state,
            "attempts": job.attempts, "max_attempts": job.max_attempts, "last_error": job.last_error,
            "result": job.result, "warning": job.warning, "generation": job.generation, "rerun": job.rerun,
            "created": when(job.created), "modified": when(job.modified), "run_after": when(job.run_after),
            "payload": job.payload}


def run_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from bridge.config import ConfigError
    from cds.store.models import Job

    if args.limit < 1:
        return _fail("--limit must be at least 1")
    try:
        _config, engine, sessions = _sessions(args)
    except ConfigError as error:
        return _fail(str(error))
    query = select(Job).order_by(Job.created.desc()).limit(args.limit)
    if args.state:
        query = query.where(Job.state == args.state)
    if args.kind:
        query = query.where(Job.kind == args.kind)
    if args.warnings:
        query = query.where(Job.warning.is_not(None))
    try:
        with sessions() as session:
            found = session.scalars(query).all()
    finally:
        engine.dispose()
    for job in found:
        if args.json:
            print(json.dumps(_as_json(job), sort_keys=True))
        else:
            # a done job shows its warning, else what its last run did (e.g. "custodian … cannot revoke"); the
            # others their error
            if job.state == "done":
                note = f"warning: {job.warning[:200]}" if job.warning else (job.result or "")[:120]
            else:
                note = (job.last_error or "")[:120]
            note = f"  {note}" if note else ""
            print(f"{job.job_id}  {job.kind:<28} {job.state:<8} {job.attempts}/{job.max_attempts}  "
                  f"{job.created.isoformat()}{note}")
    return 0


def run_retry(args: argparse.Namespace) -> int:
    from bridge.config import ConfigError
    from cds.store.jobs import take_new_jobs
    from workers import jobs

    try:
        config, engine, sessions = _sessions(args)
    except ConfigError as error:
        return _fail(str(error))
    missing: list[str] = []
    try:
        with sessions() as session:
            with session.begin():
                for job_id in args.job_ids:
                    if jobs.requeue(session, job_id) is None:
                        missing.append(job_id)
            queued = take_new_jobs(session)
    finally:
        engine.dispose()
    published = False
    if queued and config.redis_url:
        from workers.app import make_celery

        app = make_celery(config)
        try:
            for job_id, queue in queued:
                app.send_task("gb.run_job", args=(job_id,), queue=queue)
            published = True
        except Exception as error:  # the rows are queued: the reconciler publishes them
            print(f"{_PROG}: not published ({error}); the reconciler will pick them up", file=sys.stderr)
    for job_id, _queue in queued:
        print(f"{job_id}: queued" + ("" if published else " (the reconciler publishes it within 15 minutes)"))
    for job_id in missing:
        print(f"{_PROG}: {job_id}: no dead or failed job with this id", file=sys.stderr)
    return 1 if missing else 0
