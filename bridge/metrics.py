"""Prometheus metrics (prometheus_client; docs/operations.md "Metrics"): the families every process records, the
multi-process directory greenbridge manages, and the exposition the gateway serves at ``/metrics``.

Processes. uvicorn runs several gateway worker processes and Celery forks pool processes, each counting on its
own; prometheus_client's multi-process mode keeps each process's values in memory-mapped files of one directory,
and the exposition adds them up. greenbridge manages that directory (``PROMETHEUS_MULTIPROC_DIR``): under
``metrics_dir`` (default ``<data_dir>/metrics``) ``greenbridge serve`` uses ``gateway/`` and ``greenbridge worker``
``worker-<node name>/``, each emptied when its command starts (the files of a previous run would otherwise be
added to this one's). The gateway's ``/metrics`` adds up every subdirectory it finds, so on one machine it shows
the workers' families too; a worker on a machine without a gateway serves its own with ``--metrics-port``.

Families recorded by the processes (counters and histograms, all labelled, so no value exists before the process
chose its mode): HTTP requests by route template and status, tokens issued by grant type, notifications received
and refused, upstream requests by custodian, method and status with their latency, task runtimes by kind and
outcome, SFTP bytes and readings stored by custodian. Families read at scrape time (:class:`StoreCollector`):
jobs by custodian, kind and state, the oldest waiting job, the jobs done in the last hour, grants by status, queue
lengths and whether the broker answered. A process not started by greenbridge (tests' in-process apps) counts in
memory; its exposition adds the directory's files to its own values.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from espi.private_files import private_dir

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The process's own families (in memory unless multi-process mode is on; then in files and not read from here).
LOCAL = CollectorRegistry(auto_describe=True)
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_RUNTIME = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

http_requests = Counter("greenbridge_http_requests", "HTTP requests answered by the gateway, by route template "
                        "(never the raw path) and status", ["method", "route", "status"], registry=LOCAL)
http_duration = Histogram("greenbridge_http_request_duration_seconds", "Time to answer an HTTP request, by route "
                          "template", ["method", "route"], buckets=_LATENCY, registry=LOCAL)
tokens_issued = Counter("greenbridge_tokens_issued", "Access tokens issued by the token endpoint, by grant type",
                        ["grant_type"], registry=LOCAL)
notifications = Counter("greenbridge_notifications", "BatchList notifications POSTed to the gateway: received "
                        "(answered 200) or refused (4xx)", ["outcome"], registry=LOCAL)
notification_uris = Counter("greenbridge_notification_uris", "Resource URIs named by notifications: accepted (a job "
                            "asked to run) or refused (no configured custodian owns it, or its host is not "
                            "allowed)", ["custodian", "outcome"], registry=LOCAL)
upstream_requests = Counter("greenbridge_upstream_requests", "HTTP requests to legacy custodians, by custodian, "
                            "method and status (\"none\": no answer)", ["custodian", "method", "status"],
                            registry=LOCAL)
upstream_duration = Histogram("greenbridge_upstream_request_duration_seconds", "Time until a custodian answered "
                              "(headers), by custodian", ["custodian"], buckets=_LATENCY, registry=LOCAL)
task_runtime = Histogram("greenbridge_task_runtime_seconds", "Job runs in the workers, by kind and outcome (done, "
                         "failed, deferred, dead, queued: asked again during the run)", ["kind", "outcome"],
                         buckets=_RUNTIME, registry=LOCAL)
sftp_bytes = Counter("greenbridge_sftp_bytes", "Bytes downloaded over SFTP (bulk files), by custodian",
                     ["custodian"], registry=LOCAL)
readings_stored = Counter("greenbridge_readings_stored", "Readings placed into the store by ingest jobs, by "
                          "custodian (\"\": local files)", ["custodian"], registry=LOCAL)

_NODE = re.compile(r"[^A-Za-z0-9._-]+")


def multiprocess_directory() -> Path | None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(directory) if directory else None


def start_multiprocess(metrics_dir: Path, role: str) -> Path:
    """Switch this process (and the processes it starts) to multi-process mode in ``metrics_dir/role``, emptied
    first. Call before any metric is recorded, in the process that starts the others (serve, worker)."""
    directory = private_dir(Path(metrics_dir)) / _NODE.sub("_", role)
    shutil.rmtree(directory, ignore_errors=True)
    private_dir(directory)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()
    return directory


def process_exited(pid: int) -> None:
    """What a dead process's live gauges held goes away (its counters stay: they are totals)."""
    from prometheus_client import multiprocess

    if multiprocess_directory() is not None:
        multiprocess.mark_process_dead(pid)


def observe_upstream(custodian_id: str, method: str, status: int | None, seconds: float) -> None:
    upstream_requests.labels(custodian_id, method, str(status) if status is not None else "none").inc()
    upstream_duration.labels(custodian_id).observe(max(0.0, seconds))


# ------------------------------------------------------------------------------------------------- exposition


def _files(metrics_dir: Path | None) -> list[str]:
    found = set(glob.glob(str(metrics_dir / "*" / "*.db"))) if metrics_dir is not None else set()
    own = multiprocess_directory()
    if own is not None:
        found |= set(glob.glob(str(own / "*.db")))
    return sorted(found)


def _merged(families: Iterable[Metric]) -> list[Metric]:
    """Families of one name from several sources as one, with the values of equal samples added (counters and
    histograms of the in-memory registry and of the files)."""
    merged: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Any]] = {}
    for family in families:
        target = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
        seen = sums.setdefault(family.name, {})
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            if key in seen:
                index = seen[key]
                old = target.samples[index]
                target.samples[index] = old._replace(value=old.value + sample.value)
            else:
                seen[key] = len(target.samples)
                target.samples.append(sample)
    return list(merged.values())


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def exposition(metrics_dir: Path | None, scraped: Iterable[Metric] = ()) -> bytes:
    """The text exposition: the families of every process (files under ``metrics_dir``, and this process's own
    when it counts in memory) and ``scraped`` (read at scrape time)."""
    recorded: list[Metric] = list(MultiProcessCollector.merge(_files(metrics_dir), accumulate=True))
    if multiprocess_directory() is None:
        for family in LOCAL.collect():
            # the files have no _created samples; neither does this process's part of the same families
            family.samples = [sample for sample in family.samples if not sample.name.endswith("_created")]
            if family.samples:
                recorded.append(family)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*_merged(recorded), *scraped]))
    return generate_latest(registry)


# ---------------------------------------------------------------------------------------- read at scrape time


def state_families(status: dict[str, Any]) -> list[Metric]:
    """Gauges of the bridge's state from an ops status (bridge.ops.collect_status), read at each scrape."""
    now = datetime.fromisoformat(status["generated"]) if status.get("generated") else datetime.now(UTC)
    jobs = GaugeMetricFamily("greenbridge_jobs", "Jobs in each open state (queued, running, deferred, failed, "
                             "dead), by custodian (\"\": none) and kind", labels=["custodian", "kind", "state"])
    done = GaugeMetricFamily("greenbridge_jobs_done_last_hour", "Jobs that ended done in the last hour, by "
                             "custodian and kind", labels=["custodian", "kind"])
    oldest = GaugeMetricFamily("greenbridge_job_oldest_waiting_seconds", "Age of the oldest job waiting (queued, "
                               "failed or deferred), by custodian and kind", labels=["custodian", "kind"])
    for row in status["jobs"]:
        for state in ("queued", "running", "deferred", "failed", "dead"):
            jobs.add_metric([row["custodian"], row["kind"], state], row[state])
        done.add_metric([row["custodian"], row["kind"]], row["done_last_hour"])
        if row["oldest_waiting"]:
            age = (now - datetime.fromisoformat(row["oldest_waiting"])).total_seconds()
            oldest.add_metric([row["custodian"], row["kind"]], max(0.0, age))
    grants = GaugeMetricFamily("greenbridge_grants", "Grants by status", labels=["status"])
    for name, count in sorted(status["grants"].items()):
        grants.add_metric([name], count)
    families: list[Metric] = [jobs, done, oldest, grants]
    broker = status["broker"]
    up = GaugeMetricFamily("greenbridge_broker_up", "Whether the broker (Redis) answered this scrape")
    up.add_metric([], 1 if broker.get("reachable") else 0)
    families.append(up)
    if broker.get("reachable"):
        lengths = GaugeMetricFamily("greenbridge_queue_length", "Messages waiting in each Celery queue",
                                    labels=["queue"])
        for name, length in sorted(broker["queues"].items()):
            lengths.add_metric([name], length)
        unacked = GaugeMetricFamily("greenbridge_queue_unacked", "Messages taken by a worker and not yet "
                                    "acknowledged (running or prefetched), all queues")
        unacked.add_metric([], broker.get("unacked", 0))
        families += [lengths, unacked]
    return families


def timed() -> Callable[[], float]:
    """A stopwatch: call the result for the seconds since."""
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
