"""Benchmark: an SFTP bulk delivery end to end through the workers, against a bare download and a bare parse.

The whole bridge runs on 127.0.0.1 as in tests/test_bridge_bulk.py (tests/bridge_stack.py, tests/servers.py): a
real OpenSSH ``sshd`` serving SFTP, the sandbox custodian (``--customers`` generated customers × ``--days`` days,
its three profiles in turn: customers 1, 4, 7… one electric meter with net metering, 15-minute readings both ways;
2, 5, 8… 15-minute electric plus daily gas and water; 3, 6, 9… hourly electric with gaps), redis-server, the
gateway under uvicorn and ``--workers``
``greenbridge worker`` processes (Celery prefork, ``--concurrency`` pool processes each) on one store (SQLite by
default, ``--postgres`` for a throwaway PostgreSQL cluster).

Set-up (not timed):

1. every customer authorizes the gateway's client at the sandbox with the bulk scope (``BR=1``): the sandbox's
   own authorize form and code exchange, as the gateway's third party but without the gateway (two requests
   each); ``greenbridge custodian import-authorizations sandbox --client ID`` then turns those Authorizations into
   server-created Grants of a CDS client registered for ``cds_usage_sandbox``, linked without tokens. So no
   subscription is fetched: only the bulk brings data. (``--via consent`` instead walks each customer through the
   gateway's consent pages, tests/bridge_stack.consent; the sandbox answers those first fetches 202.)
2. the sandbox writes bulk set 1 into sshd's tree (``GET Batch/Bulk/1`` with its client token). Its own BatchList
   is held back (``GREENBRIDGE_SANDBOX_DEFER=3600``), so the clock starts when this script POSTs it.

Measured, interleaved in one run (bare round, pipeline, bare round; the bare figures are the faster round's):

* **pipeline**: from POSTing the BatchList naming the ``sftp://`` URI to ``/custodians/sandbox/notify`` until the
  last ``ingest_bulk_part`` job is done (its ``finished`` time in the jobs table): the gateway's job, the
  ``fetch_bulk`` run (paramiko download with espi.sftp, split per subscription with espi.bulk) and one
  ``ingest_bulk_part`` run per customer (translate, upsert into the store, activate the Grant);
* **bare download**: ``espi.sftp.download`` of the same remote file, in this process, and OpenSSH's ``sftp``
  command (``get``) of the same file; MB/s of both and their ratio;
* **bare parse**: ``for _, e in lxml.etree.iterparse(path): e.clear()`` over the downloaded bytes in a fresh
  process (bench/translate.py's baseline, its own function);
* for the breakdown only: ``espi.bulk.split_bulk`` of the same file in a fresh process.

Readings are the IntervalReadings of the bulk file (counted outside any timing) and must equal the sum the
``ingest_bulk_part`` jobs report having translated. Printed: pipeline seconds and readings per second; bare
download + bare parse = bare total, and readings per second over it; the ratio pipeline / bare; where the pipeline's
time went (jobs table); the workers' CPU seconds and peak RSS (VmHWM of each worker process and pool child).
No figure is asserted: a failed or missing job, or a count that does not add up, is printed loudly (exit 1).

The sandbox generates its customers at start-up and tests/servers.py gives it 30 s to answer: on a 2-core machine
that is room for about 400 customers × 31 days (200 × 31 takes about 12 s).

    .venv/bin/python bench/pipeline.py                            # 200 customers × 31 days (about 80 s)
    .venv/bin/python bench/pipeline.py --customers 5 --days 2     # a smoke run (well under a minute)
    .venv/bin/python bench/pipeline.py --workers 2 --concurrency 1 --postgres
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
# Run as ``python bench/pipeline.py``, this directory comes first on sys.path, and bench/gateway.py would shadow
# the gateway package that tests/gateway_helpers imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

import httpx2  # noqa: E402
from bridge_stack import (  # noqa: E402
    BULK_SCOPE,
    CUSTODIAN_ID,
    SANDBOX_CLIENT,
    Bridge,
    consent,
    register,
    start_bridge,
)
from servers import SshdServer, create_database, postgres_cluster, sshd_server  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1e6
BULK_ID = "1"


def _bench_translate():
    """bench/translate.py as a module named ``bench_translate`` (its iterparse baseline and reading counter)."""
    spec = importlib.util.spec_from_file_location("bench_translate", BENCH / "translate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_translate = _bench_translate()


# ------------------------------------------------------------------------------------------------------- /proc
def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants (Celery's pool children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of the live tree, plus what its reaped children used (cutime, cstime of each)."""
    total = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime (stat(5) fields 14–17)
    return total / CLOCK_TICKS


def peak_rss_kb(pid: int) -> int | None:
    """VmHWM: the peak resident set of one process's own address space."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


@dataclass
class RssWatch:
    """The highest VmHWM seen per process of the workers' trees (pool children may come and go)."""

    roots: list[int]
    peaks: dict[int, int] = field(default_factory=dict)
    mains: set[int] = field(default_factory=set)

    def sample(self) -> None:
        self.mains.update(self.roots)
        for root in self.roots:
            for pid in process_tree(root):
                value = peak_rss_kb(pid)
                if value is not None:
                    self.peaks[pid] = max(value, self.peaks.get(pid, 0))

    def summary(self) -> tuple[float, float, float]:
        """(largest worker main process, largest pool child, sum of all) in MB."""
        mains = [kb for pid, kb in self.peaks.items() if pid in self.mains]
        children = [kb for pid, kb in self.peaks.items() if pid not in self.mains]
        return (max(mains, default=0) / 1024, max(children, default=0) / 1024, sum(self.peaks.values()) / 1024)


# ------------------------------------------------------------------------------------------------- authorizing
def authorize_at_sandbox(bridge: Bridge, customers: list[str]) -> list[str]:
    """Each customer approves the gateway's client (the third party ``gateway``) at the sandbox for the bulk
    scope, and the code is exchanged: the sandbox then holds one Authorization (and Subscription) per customer.
    Returns their ids."""
    redirect_uri = f"{bridge.gateway}/custodians/{CUSTODIAN_ID}/callback"
    authorizations = []
    with httpx2.Client(timeout=60, follow_redirects=False, trust_env=False) as http:
        for number, customer in enumerate(customers, 1):
            state = f"bench-{number}"
            answer = http.post(f"{bridge.sandbox}/oauth/authorize", data={
                "response_type": "code", "client_id": SANDBOX_CLIENT, "redirect_uri": redirect_uri,
                "scope": BULK_SCOPE, "state": state, "customer_id": customer, "password": "sandbox",
                "decision": "approve"})
            if answer.status_code not in (302, 303):
                raise SystemExit(f"sandbox authorize for {customer}: {answer.status_code} {answer.text[:300]}")
            query = parse_qs(urlsplit(answer.headers["location"]).query)
            if query.get("state") != [state] or "code" not in query:
                raise SystemExit(f"sandbox authorize for {customer}: redirected to {answer.headers['location']}")
            token = http.post(f"{bridge.sandbox}/oauth/token", auth=(SANDBOX_CLIENT, bridge.sandbox_secret), data={
                "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": redirect_uri})
            if token.status_code != 200 or "/Batch/Subscription/" not in token.json().get("resourceURI", ""):
                raise SystemExit(f"sandbox code exchange for {customer}: {token.status_code} {token.text[:300]}")
            authorizations.append(token.json()["authorizationURI"].rstrip("/").rsplit("/", 1)[1])
    return authorizations


def revoke_at_sandbox(bridge: Bridge, authorizations: list[str]) -> None:
    """The customers revoke those Authorizations at the sandbox (so that the bulk no longer carries them)."""
    with httpx2.Client(timeout=60, trust_env=False) as http:
        for authorization in authorizations:
            answer = http.post(f"{bridge.sandbox}/sandbox/authorizations/{authorization}/revoke",
                               headers={"Accept": "application/json"})
            if answer.status_code != 200:
                raise SystemExit(f"sandbox revoke of {authorization}: {answer.status_code} {answer.text[:300]}")


def register_custodian_client(bridge: Bridge) -> str:
    """A CDS registration with the sandbox custodian's usage scope; the id of its code-flow client."""
    with httpx2.Client(base_url=bridge.gateway, timeout=60, trust_env=False) as http:
        registered = http.post("/oauth/register", json={"scope": f"cds_client_admin cds_usage_{CUSTODIAN_ID}",
                                                        "client_name": "bench pipeline"})
        if registered.status_code != 201:
            raise SystemExit(f"POST /oauth/register: {registered.status_code} {registered.text[:300]}")
        body = registered.json()
        access = http.post("/oauth/token", auth=(body["client_id"], body["client_secret"]), data={
            "grant_type": "client_credentials", "scope": "cds_client_admin"}).json()["access_token"]
        clients = http.get("/cds-api/v1/clients", headers={"Authorization": f"Bearer {access}"}).json()["clients"]
    return next(c["client_id"] for c in clients if f"cds_usage_{CUSTODIAN_ID}" in c["scope"].split())


def import_grants(bridge: Bridge, client_id: str) -> tuple[int, str]:
    """``greenbridge custodian import-authorizations``: (Grants created, its summary line)."""
    run = subprocess.run([sys.executable, "-m", "greenbridge", "custodian", "import-authorizations", CUSTODIAN_ID,
                          "--client", client_id], cwd=REPO, env={**os.environ, **bridge.env}, capture_output=True,
                         text=True, timeout=600, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"import-authorizations failed ({run.returncode}): {run.stderr.strip()[-500:]}")
    created = sum(line.startswith("created\t") for line in run.stdout.splitlines())
    return created, run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""


def grant_access(bridge: Bridge, customers: list[str], via: str) -> str:
    """One Grant per customer whose upstream authorization has the bulk scope; says how it was done."""
    fallback = ""
    if via == "import":
        authorizations = authorize_at_sandbox(bridge, customers)
        try:
            created, summary = import_grants(bridge, register_custodian_client(bridge))
        except RuntimeError as error:
            fallback = f"import failed: {error}"
        else:
            if created == len(customers):
                return f"imported ESPI Authorizations ({summary})"
            fallback = f"import created {created} Grants for {len(customers)} customers ({summary})"
        print(f"({fallback}; revoking those Authorizations and falling back to consent)", file=sys.stderr)
        revoke_at_sandbox(bridge, authorizations)
    client = register(bridge.gateway)
    for index in range(len(customers)):
        consent(bridge, client, customer_index=index)
    how = "consent through the gateway (the first fetches are answered 202 and never resumed)"
    return f"{how}; {fallback}" if fallback else how


# ---------------------------------------------------------------------------------------------------- the bulk
def request_bulk(bridge: Bridge, sshd: SshdServer, bulk_dir: Path) -> Path:
    """The sandbox writes bulk set 1 into ``bulk_dir`` in sshd's tree; its BatchList is held back (defer).
    Returns the file."""
    answer = httpx2.get(f"{bridge.sandbox}/espi/1_1/resource/Batch/Bulk/{BULK_ID}", timeout=600, trust_env=False,
                        headers={"Authorization": f"Bearer {bridge.sandbox_client_token()}"})
    if answer.status_code != 202:
        raise SystemExit(f"GET Batch/Bulk/{BULK_ID}: {answer.status_code} {answer.text[:300]}")
    path = bulk_dir / SANDBOX_CLIENT / f"{BULK_ID}.xml"
    if not path.is_file():
        raise SystemExit(f"the sandbox wrote no bulk file at {path}")
    if os.geteuid() == 0:  # sshd serves as its login user: the file and its directory must be theirs to read
        account = pwd.getpwnam(sshd.user)
        for item in (path.parent, path):
            os.chown(item, account.pw_uid, account.pw_gid)
    return path


def bulk_uri(sshd: SshdServer, path: Path) -> str:
    return f"sftp://{sshd.user}@{sshd.host}:{sshd.port}{path}"


def openssh_get(sshd: SshdServer, remote: Path, dest: Path, known_hosts: Path) -> float:
    """Seconds for OpenSSH's ``sftp`` to connect and ``get`` the file (key login, pinned host key)."""
    sftp = shutil.which("sftp") or "/usr/bin/sftp"
    cmd = [sftp, "-b", "-", "-F", "/dev/null", "-i", str(sshd.client_key_path), "-P", str(sshd.port),
           "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known_hosts}",
           "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", f"{sshd.user}@{sshd.host}"]
    start = time.perf_counter()
    run = subprocess.run(cmd, input=f'get "{remote}" "{dest}"\n', capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if run.returncode != 0 or dest.stat().st_size != remote.stat().st_size:
        raise SystemExit(f"OpenSSH sftp get failed ({run.returncode}): {run.stderr.strip()[-500:]}")
    return seconds


def paramiko_get(sshd: SshdServer, remote: Path, dest_dir: Path) -> tuple[float, Path]:
    """Seconds for espi.sftp.download (what the fetch_bulk job runs) of the same file."""
    from espi import sftp

    start = time.perf_counter()
    downloaded = sftp.download(sshd, str(remote), dest_dir)
    return time.perf_counter() - start, downloaded.path


SPLIT_CHILD = r"""
import json, sys, time
from espi.bulk import split_bulk
start = time.perf_counter()
split = split_bulk(sys.argv[1], sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - start, "parts": len(split.parts), "readings": split.readings}))
"""


def bare_split(path: Path, out: Path) -> dict:
    """espi.bulk.split_bulk alone, in a fresh process (after its imports); the parts are removed."""
    run = subprocess.run([sys.executable, "-c", SPLIT_CHILD, str(path), str(out)], cwd=REPO, capture_output=True,
                         text=True, check=False)
    shutil.rmtree(out, ignore_errors=True)
    if run.returncode != 0:
        raise SystemExit(f"split_bulk failed:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def bare_round(sshd: SshdServer, remote: Path, work: Path, known_hosts: Path) -> dict:
    """One round of the bare side: paramiko download, OpenSSH download, iterparse, split (each from cold)."""
    scratch = work / "bare"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    paramiko_s, local = paramiko_get(sshd, remote, scratch / "paramiko")
    openssh_s = openssh_get(sshd, remote, scratch / "openssh.xml", known_hosts)
    parse = _translate.measure("iterparse", local, scratch, 1)
    split = bare_split(local, scratch / "parts")
    row = {"paramiko": paramiko_s, "openssh": openssh_s, "iterparse": parse["seconds"],
           "split": split["seconds"], "split_parts": split["parts"], "split_readings": split["readings"]}
    shutil.rmtree(scratch, ignore_errors=True)
    return row


# ---------------------------------------------------------------------------------------------------- pipeline
def post_batch_list(bridge: Bridge, uri: str) -> float:
    """POST the BatchList the sandbox would send; the wall-clock time just before the request."""
    from espi.notification import build_batch_list

    body = build_batch_list([uri])
    started = time.time()
    answer = httpx2.post(f"{bridge.gateway}/custodians/{CUSTODIAN_ID}/notify", content=body, timeout=60,
                         headers={"Content-Type": "application/atom+xml"}, trust_env=False)
    if answer.status_code != 200:
        raise SystemExit(f"POST /custodians/{CUSTODIAN_ID}/notify: {answer.status_code} {answer.text[:300]}")
    return started


def _epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def bulk_jobs(sessions) -> list:
    from sqlalchemy import select

    from cds.store.models import Job

    with sessions() as session:
        return list(session.scalars(select(Job).where(Job.kind.in_(("fetch_bulk", "ingest_bulk_part")))
                                    .order_by(Job.created)))


def customers_stored(sessions) -> int:
    """Customers with usage segments in the store."""
    from sqlalchemy import func, select

    from cds.store.models import UsageSegmentRow

    with sessions() as session:
        return session.scalar(select(func.count(func.distinct(UsageSegmentRow.customer_id))))


def wait_pipeline(bridge: Bridge, sessions, parts: int, timeout: float, rss: RssWatch) -> list:
    """Until the fetch_bulk job and ``parts`` ingest_bulk_part jobs are done or dead (polling the jobs table)."""
    deadline = time.monotonic() + timeout
    last_report = time.monotonic()
    while True:
        rss.sample()
        jobs = bulk_jobs(sessions)
        bulk = [j for j in jobs if j.kind == "fetch_bulk"]
        done = [j for j in jobs if j.kind == "ingest_bulk_part" and j.state in ("done", "dead")]
        if bulk and all(j.state in ("done", "dead") for j in bulk) and (
                len(done) >= parts or any(j.state == "dead" for j in bulk)):
            return jobs
        for proc in bridge.workers:
            if proc.poll() is not None:
                raise SystemExit(f"a worker exited with {proc.returncode}\n{bridge.logs()}")
        if time.monotonic() > deadline:
            states = sorted({(j.kind, j.state) for j in jobs})
            raise SystemExit(f"the pipeline did not finish within {timeout:.0f} s: {states}\n{bridge.logs()}")
        if time.monotonic() - last_report > 30:
            last_report = time.monotonic()
            print(f"    {len(done)}/{parts} parts stored…", file=sys.stderr)
        time.sleep(0.5)


READINGS_DONE = re.compile(r"\(ingest_bulk_part\) done: grant \S+: (\d+) readings")


def logged_readings(bridge: Bridge) -> int:
    """The readings the ingest_bulk_part jobs say they translated (their ``done`` log lines)."""
    return sum(int(m) for log in bridge.worker_logs for m in READINGS_DONE.findall(log.read_text(errors="replace")))


def breakdown(jobs: list, posted: float) -> dict:
    (bulk,) = [j for j in jobs if j.kind == "fetch_bulk"]
    parts = [j for j in jobs if j.kind == "ingest_bulk_part"]
    runs = [_epoch(j.finished) - _epoch(j.started) for j in parts if j.finished and j.started]
    return {
        "queued": _epoch(bulk.started) - posted,
        "fetch_bulk": _epoch(bulk.finished) - _epoch(bulk.started),
        "parts_wall": max(_epoch(j.finished) for j in parts) - _epoch(bulk.finished),
        "part_runs": sum(runs), "part_median": statistics.median(runs) if runs else 0.0,
        "total": max(_epoch(j.finished) for j in parts) - posted,
    }


# -------------------------------------------------------------------------------------------------------- main
def main() -> int:
    from cds.store.engine import make_engine, make_sessionmaker

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=200, help="sandbox customers in the bulk (default 200)")
    parser.add_argument("--days", type=int, default=31, help="days of data per customer (default 31)")
    parser.add_argument("--workers", type=int, default=1, help="greenbridge worker processes (default 1)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker (default 2)")
    parser.add_argument("--via", choices=("import", "consent"), default="import",
                        help="how the Grants are made (default: import-authorizations; consent: the gateway's "
                             "consent pages, one customer at a time)")
    parser.add_argument("--postgres", action="store_true", help="store in a throwaway PostgreSQL cluster "
                                                                "(default: SQLite)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the pipeline (default 3600)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, store)")
    args = parser.parse_args()
    if min(args.customers, args.days, args.workers, args.concurrency) < 1:
        parser.error("--customers, --days, --workers and --concurrency must be ≥ 1")

    work = Path(tempfile.mkdtemp(prefix="greenbridge-bench-pipeline-"))
    problems: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            database_url = None
            if args.postgres:
                database_url = create_database(stack.enter_context(postgres_cluster(work)))
            print("starting sshd, the sandbox, redis, the gateway and the workers…", file=sys.stderr)
            sshd = stack.enter_context(sshd_server(work))
            bulk_dir = sshd.root / "bulk"
            bulk_dir.mkdir(mode=0o755)
            sandbox_env = {"GREENBRIDGE_SANDBOX_BULK_DIR": str(bulk_dir),
                           "GREENBRIDGE_SANDBOX_SFTP_URI": f"sftp://{sshd.user}@{sshd.host}:{sshd.port}{bulk_dir}",
                           "GREENBRIDGE_SANDBOX_NOTIFY_ON_NEW_DATA": "false",
                           # 202 for subscription fetches, and the sandbox's own BatchList an hour late: this
                           # script posts it, so the clock starts there
                           "GREENBRIDGE_SANDBOX_DEFER": "3600"}
            sftp_toml = (f'\n[custodians.sftp]\nhost = "{sshd.host}"\nport = {sshd.port}\nuser = "{sshd.user}"\n'
                         f'key_path = "{sshd.client_key_path}"\nhost_key = "{sshd.host_key_line}"\n')
            started = time.perf_counter()
            bridge = stack.enter_context(start_bridge(
                work / "bridge", scopes=(BULK_SCOPE,), sandbox_env=sandbox_env, custodian_toml=sftp_toml,
                customers=args.customers, days=args.days, workers=0, database_url=database_url))
            for _ in range(args.workers):
                bridge.start_worker(concurrency=args.concurrency)
            print(f"    up in {time.perf_counter() - started:.1f} s", file=sys.stderr)

            customers = [c["id"] for c in httpx2.get(f"{bridge.sandbox}/sandbox.json", timeout=60,
                                                     trust_env=False).json()["customers"]]
            print(f"authorizing {len(customers)} customers (--via {args.via})…", file=sys.stderr)
            started = time.perf_counter()
            how = grant_access(bridge, customers, args.via)
            authorize_s = time.perf_counter() - started

            print("the sandbox writes the bulk file…", file=sys.stderr)
            started = time.perf_counter()
            remote = request_bulk(bridge, sshd, bulk_dir)
            write_s = time.perf_counter() - started
            size = remote.stat().st_size
            readings = _translate.readings(remote)
            known_hosts = work / "known_hosts"
            known_hosts.write_text(f"[{sshd.host}]:{sshd.port} {sshd.host_key_line}\n")

            rounds = []
            print("bare round 1 (paramiko, OpenSSH sftp, iterparse, split)…", file=sys.stderr)
            rounds.append(bare_round(sshd, remote, work, known_hosts))

            print("pipeline: BatchList → fetch_bulk → ingest_bulk_part × N…", file=sys.stderr)
            engine = make_engine(bridge.database_url)
            stack.callback(engine.dispose)
            sessions = make_sessionmaker(engine)
            rss = RssWatch([p.pid for p in bridge.workers])
            cpu_before = sum(tree_cpu_seconds(p.pid) for p in bridge.workers)
            posted = post_batch_list(bridge, bulk_uri(sshd, remote))
            jobs = wait_pipeline(bridge, sessions, len(customers), args.timeout, rss)
            cpu = sum(tree_cpu_seconds(p.pid) for p in bridge.workers) - cpu_before
            rss.sample()

            print("bare round 2…", file=sys.stderr)
            rounds.append(bare_round(sshd, remote, work, known_hosts))

            bad = [(j.kind, j.state, j.attempts, j.last_error) for j in jobs if j.state != "done"]
            if bad:
                problems.append(f"jobs not done: {bad[:5]}")
            retried = [(j.kind, j.attempts, j.last_error) for j in jobs if j.attempts > 1]
            if retried:
                problems.append(f"{len(retried)} job(s) needed more than one attempt: {retried[:3]}")
            parts = [j for j in jobs if j.kind == "ingest_bulk_part"]
            if len(parts) != len(customers):
                problems.append(f"{len(parts)} ingest_bulk_part jobs for {len(customers)} customers")
            stored = customers_stored(sessions)
            if stored != len(customers):
                problems.append(f"usage segments stored for {stored} of {len(customers)} customers")
            translated = logged_readings(bridge)
            if translated != readings:
                problems.append(f"the bulk file holds {readings:,d} IntervalReadings, the ingest jobs report "
                                f"{translated:,d}")
            if bad or len(parts) != len(customers):
                print(bridge.logs(), file=sys.stderr)
                times = None
            else:
                times = breakdown(jobs, posted)
    finally:
        if args.keep:
            print(f"(kept {work})", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    bare = {key: min(r[key] for r in rounds) for key in ("paramiko", "openssh", "iterparse", "split")}
    print()
    print(f"Python {platform.python_version()}; {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; running as "
          f"{'root' if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name}")
    print(f"{len(customers)} customers × {args.days} days; store "
          f"{'PostgreSQL' if args.postgres else 'SQLite'}; {args.workers} worker(s) × {args.concurrency} pool "
          f"process(es); Grants: {how}")
    print(f"bulk file {size / MB:.1f} MB, {readings:,d} IntervalReadings; the sandbox wrote it in {write_s:.1f} s "
          f"(not timed); authorizing took {authorize_s:.1f} s (not timed)")
    print()
    if times is None:
        print("!!! the pipeline did not complete: " + "; ".join(problems))
        return 1
    bare_total = bare["paramiko"] + bare["iterparse"]
    print(f"{'':28} {'seconds':>9} {'readings/s':>12} {'MB/s':>8}")
    print(f"{'pipeline (end to end)':28} {times['total']:9.2f} {readings / times['total']:12,.0f} "
          f"{size / MB / times['total']:8.1f}")
    print(f"{'bare download (paramiko)':28} {bare['paramiko']:9.2f} {'':>12} {size / MB / bare['paramiko']:8.1f}")
    print(f"{'bare parse (iterparse)':28} {bare['iterparse']:9.2f} {readings / bare['iterparse']:12,.0f} "
          f"{size / MB / bare['iterparse']:8.1f}")
    print(f"{'bare total':28} {bare_total:9.2f} {readings / bare_total:12,.0f} {size / MB / bare_total:8.1f}")
    print(f"{'OpenSSH sftp get':28} {bare['openssh']:9.2f} {'':>12} {size / MB / bare['openssh']:8.1f}")
    print()
    print(f"pipeline / bare (download + parse): {times['total'] / bare_total:.1f}×")
    print(f"SFTP: paramiko (espi.sftp) {size / MB / bare['paramiko']:.1f} MB/s, OpenSSH sftp "
          f"{size / MB / bare['openssh']:.1f} MB/s: OpenSSH / paramiko = {bare['paramiko'] / bare['openssh']:.2f}×")
    print(f"(bare figures: the faster of {len(rounds)} rounds, one before and one after the pipeline; per round "
          + ", ".join(f"paramiko {r['paramiko']:.2f} s / OpenSSH {r['openssh']:.2f} s / iterparse "
                      f"{r['iterparse']:.2f} s" for r in rounds) + ")")
    print()
    slots = args.workers * args.concurrency
    print("where the pipeline's time went (jobs table):")
    print(f"  BatchList POSTed → fetch_bulk started   {times['queued']:8.2f} s")
    print(f"  fetch_bulk (download + split + fan-out) {times['fetch_bulk']:8.2f} s   (bare: download "
          f"{bare['paramiko']:.2f} s + split {bare['split']:.2f} s)")
    print(f"  fetch_bulk done → last part stored      {times['parts_wall']:8.2f} s   ({len(parts)} ingest_bulk_part "
          f"runs, {times['part_runs']:.1f} s in all over {slots} pool slot(s), median {times['part_median']:.2f} s)")
    main_mb, child_mb, all_mb = rss.summary()
    print(f"workers: {cpu:.1f} CPU s over {times['total']:.1f} s of pipeline; peak RSS (VmHWM) worker "
          f"{main_mb:.0f} MB, largest pool process {child_mb:.0f} MB, all processes {all_mb:.0f} MB")
    print(f"readings: {readings:,d} IntervalReadings in the bulk, {translated:,d} translated by the ingest jobs; "
          f"usage segments stored for {stored} of {len(customers)} customers")
    if problems:
        print("\n!!! " + "\n!!! ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
