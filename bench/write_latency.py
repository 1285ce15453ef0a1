"""Benchmark: the gateway's write latency while a worker ingests a large file, next to the same latency with no
ingest running, on SQLite and PostgreSQL, side by side in one run (issue 13 item 8).

Per backend, real processes on 127.0.0.1: a redis-server (tests/servers.py), the gateway under uvicorn
(``gateway.app:create_app``, ``--no-access-log``) and one ``greenbridge worker --concurrency 1`` on a fresh store (a
SQLite file, or a database in a throwaway PostgreSQL cluster). The write measured is token issuance:
``POST /oauth/token`` with ``grant_type=client_credentials`` and client_secret_basic, which reads the client and
commits a new token row. The load generator is this process: ``--concurrency`` keep-alive connections, each sending
one request after the other (asyncio, uvloop when installed).

Each round measures two phases on the same servers:

* ``no ingest``: ``--idle-seconds`` of token requests with the worker idle;
* ``during ingest``: an ``ingest_file`` job of the generated feed (``--usage-points`` × ``--days`` at
  ``--interval`` seconds, a new customer each round, so every object is created) is submitted to the worker, and
  token requests run until the job is done; a request counts when it was sent while the job was running (seen
  running, not yet seen finished: the job's state is polled every 0.1 s), however late its answer came.

The table shows, per backend and phase, the requests, errors (non-200 answers and transport errors, which include
the client's 60 s timeout), and the nearest-rank p50, p99 and maximum latency over all rounds; then the ratios of
``during ingest`` to ``no ingest`` (p50 and p99) and the ingest's own duration (the job's started → finished). Errors
are printed loudly and the exit status is then 1. Nothing is asserted about the figures.

    .venv/bin/python bench/write_latency.py                                # both backends, 2 rounds
    .venv/bin/python bench/write_latency.py --backends sqlite --rounds 1   # a quick look
    .venv/bin/python bench/write_latency.py --usage-points 40 --days 365   # a larger file (about 290 MB)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import math
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from servers import create_database, postgres_cluster, redis_server, uvicorn_server  # noqa: E402

TOKEN_FORM = b"grant_type=client_credentials&scope=cds_client_admin"


def _bench_gateway():
    """bench/gateway.py as a module named ``bench_gateway`` (as ``gateway`` it would shadow the gateway package)."""
    spec = importlib.util.spec_from_file_location("bench_gateway", REPO / "bench" / "gateway.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_helpers = _bench_gateway()
basic_auth = _helpers.basic_auth
event_loop_factory = _helpers.event_loop_factory
print_error_banner = _helpers.print_error_banner
register_client = _helpers.register_client


@dataclass
class Phase:
    latencies_ns: list[int] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)

    def add(self, other: Phase) -> None:
        self.latencies_ns += other.latencies_ns
        self.errors.update(other.errors)

    def ms(self, q: float) -> float:
        if not self.latencies_ns:
            return math.nan
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] / 1e6


async def load(url: str, headers: dict[str, str], concurrency: int, *, seconds: float | None = None,
               window=None) -> Phase:
    """Token requests on ``concurrency`` connections for ``seconds``, or while ``window()`` (returning the
    (start, end) perf_counter_ns of the measured span, end None while it lasts) says the span goes on."""
    phase = Phase()
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=60)
    start = time.perf_counter_ns()
    async with httpx2.AsyncClient(limits=limits, timeout=60.0, trust_env=False) as client:
        async def connection() -> None:
            while True:
                sent = time.perf_counter_ns()
                if seconds is not None and sent - start >= seconds * 1e9:
                    return
                if window is not None and window()[1] is not None:
                    return
                try:
                    answer = await client.post(url, headers=headers, content=TOKEN_FORM)
                    problem = None if answer.status_code == 200 else f"HTTP {answer.status_code}"
                except httpx2.HTTPError as error:
                    problem = type(error).__name__
                done = time.perf_counter_ns()
                if window is not None:
                    began, ended = window()
                    if began is None or sent < began or (ended is not None and sent > ended):
                        continue  # not sent while the ingest ran (however long its answer took)
                if problem is None:
                    phase.latencies_ns.append(done - sent)
                else:
                    phase.errors[problem] += 1

        await asyncio.gather(*(connection() for _ in range(concurrency)))
    return phase


class JobWatch:
    """Polls the job's state in a thread: when it was first seen running and first seen finished."""

    def __init__(self, sessions, job_id: str) -> None:
        self.sessions, self.job_id = sessions, job_id
        self.began: int | None = None
        self.ended: int | None = None
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        from cds.store.models import Job

        while self.ended is None:
            with self.sessions() as session:
                state = session.get(Job, self.job_id, populate_existing=True).state
            now = time.perf_counter_ns()
            if state == "running" and self.began is None:
                self.began = now
            elif state in ("done", "dead", "failed"):
                self.began = self.began or now
                self.ended = now
            time.sleep(0.1)

    def window(self) -> tuple[int | None, int | None]:
        return self.began, self.ended


@dataclass
class BackendResult:
    backend: str
    idle: Phase = field(default_factory=Phase)
    during: Phase = field(default_factory=Phase)
    ratios: list[tuple[float, float]] = field(default_factory=list)  # per round: p50, p99 during / idle
    ingests: list[tuple[float, str]] = field(default_factory=list)  # seconds, the job's result


def run_backend(backend: str, feed: Path, args: argparse.Namespace, directory: Path) -> BackendResult:
    from bridge.config import load_config
    from cds.store.engine import make_engine, make_sessionmaker
    from cds.store.models import Job
    from workers.app import make_celery
    from workers.tasks import submit

    result = BackendResult(backend)
    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            cluster = stack.enter_context(postgres_cluster(directory))
            database_url = create_database(cluster, "greenbridge_bench")
        else:
            database_url = f"sqlite+pysqlite:///{directory}/store-{backend}.db"
        redis_url = stack.enter_context(redis_server(directory))
        env = {"GREENBRIDGE_DATABASE_URL": database_url, "GREENBRIDGE_REDIS_URL": str(redis_url),
               "GREENBRIDGE_DATA_DIR": str(directory / f"var-{backend}"),
               "GREENBRIDGE_SECRET_KEY": secrets.token_urlsafe(32), "GREENBRIDGE_ISSUER": "http://127.0.0.1:{port}"}
        logs = args.keep_logs or directory
        print(f"[{backend}] starting the gateway and a worker…", file=sys.stderr)
        gateway = stack.enter_context(uvicorn_server(
            "gateway.app:create_app", env=env, health_path="/healthz", app_dir=REPO,
            args=["--no-access-log", "--log-level", "warning"], log_path=logs / f"gateway-{backend}.log"))
        worker_log = stack.enter_context(open(logs / f"worker-{backend}.log", "ab"))
        worker = subprocess.Popen([sys.executable, "-m", "greenbridge", "worker", "--concurrency", "1",
                                   "--queues", "translate", "--hostname", f"bench-{backend}-{os.getpid()}@localhost",
                                   "--log-level", "warning"], cwd=REPO, env={**os.environ, **env},
                                  stdin=subprocess.DEVNULL, stdout=worker_log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        stack.callback(_stop_worker, worker)
        config = load_config(environ=env)
        app = make_celery(config)
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        sessions = make_sessionmaker(engine)
        client_id, client_secret = register_client(gateway)
        headers = {"Authorization": basic_auth(client_id, client_secret),
                   "Content-Type": "application/x-www-form-urlencoded"}
        url = gateway + "/oauth/token"
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(load(url, headers, args.concurrency, seconds=2.0))  # warm-up
            for number in range(1, args.rounds + 1):
                print(f"[{backend}] round {number}/{args.rounds}: no ingest…", file=sys.stderr)
                idle = runner.run(load(url, headers, args.concurrency, seconds=args.idle_seconds))
                print(f"[{backend}] round {number}/{args.rounds}: during an ingest…", file=sys.stderr)
                with sessions() as session:
                    job = submit(app, session, "ingest_file",
                                 {"path": str(feed), "customer_id": f"bench-{backend}-{number}"})
                watch = JobWatch(sessions, job.job_id)
                during = runner.run(load(url, headers, args.concurrency, window=watch.window))
                watch.thread.join()
                with sessions() as session:
                    done = session.get(Job, job.job_id)
                    if done.state != "done":
                        raise SystemExit(f"[{backend}] the ingest job ended {done.state}: {done.last_error}")
                    result.ingests.append(((done.finished - done.started).total_seconds(), done.result or ""))
                result.idle.add(idle)
                result.during.add(during)
                result.ratios.append((during.ms(0.5) / idle.ms(0.5), during.ms(0.99) / idle.ms(0.99)))
                print(f"    no ingest p50 {idle.ms(0.5):.1f} ms p99 {idle.ms(0.99):.1f} ms; during ingest p50 "
                      f"{during.ms(0.5):.1f} ms p99 {during.ms(0.99):.1f} ms max {during.ms(1.0):.1f} ms "
                      f"({len(during.latencies_ns)} requests, {sum(during.errors.values())} errors) in "
                      f"{result.ingests[-1][0]:.1f} s of ingest", file=sys.stderr)
    return result


def _stop_worker(worker: subprocess.Popen) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"])
    parser.add_argument("--rounds", type=int, default=2, help="no-ingest / during-ingest pairs (default 2)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent connections (default 4)")
    parser.add_argument("--idle-seconds", type=float, default=8.0, help="measured seconds with no ingest (default 8)")
    parser.add_argument("--usage-points", type=int, default=20, help="UsagePoints in the ingested feed (default 20)")
    parser.add_argument("--days", type=int, default=365, help="days per UsagePoint (default 365)")
    parser.add_argument("--interval", type=int, default=900, help="seconds per reading (default 900)")
    parser.add_argument("--keep-logs", type=Path, help="a directory for the servers' logs (default: discarded)")
    args = parser.parse_args()
    if args.rounds < 1 or args.concurrency < 1 or args.idle_seconds <= 0:
        parser.error("--rounds and --concurrency must be ≥ 1, --idle-seconds > 0")

    from espi.generate import FeedSpec, write_feed

    results = []
    with tempfile.TemporaryDirectory(prefix="greenbridge-bench-writes-") as tmp:
        directory = Path(tmp)
        feed = directory / "feed.xml"
        with open(feed, "w", encoding="utf-8") as out:
            totals = write_feed(out, FeedSpec(usage_points=args.usage_points, days=args.days,
                                              interval=args.interval))
        size_mb = feed.stat().st_size / 1e6
        for backend in args.backends:
            results.append(run_backend(backend, feed, args, directory))

    print()
    print(f"Python {platform.python_version()}; {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"feed: {args.usage_points} UsagePoints × {args.days} days at {args.interval} s, {size_mb:.0f} MB, "
          f"{getattr(totals, 'readings', '?')} readings; {args.concurrency} connections; {args.rounds} round(s)")
    print()
    print(f"{'backend':11} {'phase':14} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for result in results:
        for name, phase in (("no ingest", result.idle), ("during ingest", result.during)):
            print(f"{result.backend:11} {name:14} {len(phase.latencies_ns):8d} {sum(phase.errors.values()):6d} "
                  f"{phase.ms(0.5):8.1f} {phase.ms(0.99):8.1f} {phase.ms(1.0):8.1f}")
    print()
    for result in results:
        p50 = result.during.ms(0.5) / result.idle.ms(0.5)
        p99 = result.during.ms(0.99) / result.idle.ms(0.99)
        spread = "" if len(result.ratios) == 1 else " (per round: " + ", ".join(
            f"{a:.2f}×/{b:.2f}×" for a, b in result.ratios) + ")"
        ingest = statistics.median(seconds for seconds, _ in result.ingests)
        print(f"{result.backend:11} during/no ingest: p50 {p50:.2f}×, p99 {p99:.2f}×{spread}; ingest "
              f"{ingest:.1f} s (median of {len(result.ingests)})")
    problems = [f"{result.backend} {name}: {kind} × {count}" for result in results
                for name, phase in (("no ingest", result.idle), ("during ingest", result.during))
                for kind, count in phase.errors.items()]
    if problems:
        print_error_banner(problems)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
