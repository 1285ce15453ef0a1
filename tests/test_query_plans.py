"""Every listing's filters and order are served by an index (issue 15 item 4), checked with EXPLAIN on both backends.

The statements are not written out here: they are captured (SQLAlchemy's ``before_cursor_execute``) while the real
code runs against a store holding several customers' data, several grants and jobs in every state:

* the seven CDS-WG3-01 §10 listings over HTTP (first page, a ``next`` page, the usage segments with ``before`` /
  ``after`` and a windowed grant), so the bearer and grant checks they make are captured too;
* the reconciler's pass (workers.jobs.lost, through workers.tasks.reconcile_jobs) and the ops dashboard's data
  (bridge.ops.collect_status).

Each captured SELECT, UPDATE and DELETE is explained with its own parameters. SQLite (``EXPLAIN QUERY PLAN``):
every access to one of our tables is a ``SEARCH`` (an index or the primary key narrows it), never a ``SCAN`` of the
table or of a whole index; a temporary B-tree for ORDER BY then only sorts the rows that search found (one
customer's segments, the jobs one state holds), never the table. PostgreSQL (``EXPLAIN (FORMAT JSON)`` with
``enable_seqscan`` off, so that the tiny test tables cannot hide a missing index behind a cheap sequential scan):
no ``Seq Scan``, and every index scan has an ``Index Cond`` (an index scan without one reads the whole index). On
both, an index condition on the customer-data tables and the jobs must name the customer (or the row's own id; for
jobs the state or id): an index that does not start from them, such as the primary key's ``kind`` of
``data_objects``, would read every customer's rows.

What reads a whole table by nature is listed in ``WHOLE_TABLE`` with its reason: the dashboard's count of grants by
status (from its covering index alone) and its custodians' health (one row per configured custodian).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from gateway_helpers import bearer, gateway_client, register
from sqlalchemy import event
from sqlalchemy.engine import Engine
from test_data_api import API, SCOPES, config, generated, grant, ingest, rel

from bridge.from_espi import TranslateOptions
from bridge.from_espi.billing import StatementPolicy
from bridge.ingest import ingest_file
from bridge.ops import collect_status
from cds.store import jobs as store_jobs
from cds.store.models import Base
from workers.kinds import sessions_for
from workers.tasks import reconcile_jobs

TABLES = frozenset(Base.metadata.tables)
LISTINGS = {  # path → (scope, authorization details of the grant that reads it)
    "accounts": ("cds_accounts_1", {}),
    "service-contracts": ("cds_service_contracts_1", {}),
    "service-points": ("cds_meters_1", {"include_service_points": True}),
    "meter-devices": ("cds_meters_1", {}),
    "bill-statements": ("cds_bill_statements_1", {}),
    "bill-sections": ("cds_service_bills_1", {}),
    "usage-segments": ("cds_usage_1", {}),
}
OTHER_CUSTOMERS = ("customer-2", "customer-3")
#: tables whose index conditions must name one of these columns: an index of the customer-data tables that does not
#: start from the customer (say the primary key's ``kind``) reads every customer's rows of that kind
NARROWED_BY = {"usage_segments": ("customer_id", "segment_id"), "data_objects": ("customer_id", "object_id"),
               "jobs": ("state", "job_id", "dedupe_key", "waiting_for")}
#: statements allowed to read a whole table or index, matched on their text, and why
WHOLE_TABLE = {
    r"GROUP BY grants\.status": "the ops dashboard counts every grant by status (ix_grants_status alone, no row "
                                "read): a count over the table is what is asked",
    r"FROM ops_custodians$": "the dashboard shows every custodian's health: one row per configured custodian",
}


class Captured:
    """The statements the engine sends while ``recording`` names what runs (SELECT, UPDATE, DELETE): the first
    parameters of each statement text per origin."""

    def __init__(self) -> None:
        self.recording, self.statements = None, {}
        event.listen(Engine, "before_cursor_execute", self._seen)  # every engine: the workers' own too

    def _seen(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.recording and not executemany and statement.lstrip().split(None, 1)[0].upper() in (
                "SELECT", "UPDATE", "DELETE", "WITH"):
            self.statements.setdefault((self.recording, statement), parameters)

    def close(self) -> None:
        event.remove(Engine, "before_cursor_execute", self._seen)


def sqlite_problems(connection, statement: str, parameters: Any) -> list[str]:
    plan = [row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]
    problems = []
    for detail in plan:
        scanned = re.match(r"SCAN (\w+)", detail)
        if scanned and scanned.group(1) in TABLES:
            problems.append(detail)
        searched = re.match(r"SEARCH (\w+) .*\((.*)\)$", detail)
        if searched and searched.group(1) in NARROWED_BY and not any(
                re.search(rf"\b{column}[=<>]", searched.group(2)) for column in NARROWED_BY[searched.group(1)]):
            problems.append(f"{detail}: not narrowed by {' or '.join(NARROWED_BY[searched.group(1)])}")
    return problems and [*problems, "plan: " + " | ".join(plan)]


def postgres_problems(connection, statement: str, parameters: Any) -> list[str]:
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    (plan,), = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).fetchall()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    problems = []

    def walk(node: dict[str, Any], parent_relation: str | None = None) -> None:
        kind, relation = node["Node Type"], node.get("Relation Name") or parent_relation
        if kind == "Seq Scan" and relation in TABLES:
            problems.append(f"Seq Scan on {relation} (filter {node.get('Filter')})")
        if kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan"):
            condition = node.get("Index Cond")
            if condition is None:
                problems.append(f"{kind} over the whole of {node.get('Index Name')} (filter {node.get('Filter')})")
            elif relation in NARROWED_BY and not any(re.search(rf"\b{column}\b", condition)
                                                     for column in NARROWED_BY[relation]):
                problems.append(f"{kind} of {node.get('Index Name')} on {condition}: not narrowed by "
                                f"{' or '.join(NARROWED_BY[relation])}")
        for child in node.get("Plans", ()):
            walk(child, relation if kind == "Bitmap Heap Scan" else None)

    walk(plan[0]["Plan"])
    return problems


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_listings_reconciler_and_ops_queries_use_indexes(tmp_path, database_url):
    today = date.today()
    with gateway_client(config(tmp_path, database_url, page_size=5)) as client:
        gateway = client.app.state.gateway
        # three customers' data (the listings' keys must pick one customer out of several), with bills
        options = TranslateOptions(key_strategy="href", statements=StatementPolicy(20))
        ingest(client, generated(tmp_path, "mine.xml", usage_points=2, days=70, start=today - timedelta(days=75)),
               statements=True)
        for number, customer in enumerate(OTHER_CUSTOMERS, 2):
            feed = generated(tmp_path, f"{customer}.xml", usage_points=2, days=40, seed=number,
                             start=today - timedelta(days=45))
            with gateway.sessions() as session, session.begin():
                ingest_file(session, feed, customer_id=customer, options=options)
        registration = register(client, SCOPES)
        tokens = {path: grant(client, registration, scope, **fields)["access_token"]
                  for path, (scope, fields) in LISTINGS.items()}
        window = grant(client, registration, segment_start=f"{(today - timedelta(days=30)).isoformat()}T05:30:00Z"
                       )["access_token"]
        noon = datetime.combine(today - timedelta(days=20), datetime.min.time(), UTC) + timedelta(hours=12)
        stamp = noon.strftime("%Y-%m-%dT%H:%M:%SZ")
        # jobs in every state, for the reconciler and the dashboard
        with gateway.sessions() as session, session.begin():
            now = store_jobs.utcnow()
            for number, state in enumerate(store_jobs.STATES * 3):
                job = store_jobs.enqueue(session, "fetch_subscription", {"custodian_id": "sandbox", "n": number},
                                         f"plan-{number}", queue="http", now=now - timedelta(minutes=number))
                job.state = state
                if state in (store_jobs.DEFERRED, store_jobs.FAILED):
                    job.run_after = now - timedelta(seconds=number)
                if state == store_jobs.RUNNING:
                    job.lease_until, job.attempts = now - timedelta(seconds=number), number % 9
                if state == store_jobs.DEFERRED and number % 2:
                    job.waiting_for = f"waiting-{number}"

        captured = Captured()
        try:
            for path, access_token in tokens.items():
                captured.recording = f"GET {path}"
                response = client.get(f"{API}/{path}", headers=bearer(access_token))
                assert response.status_code == 200, response.text
                listing = path.replace("-", "_")
                assert response.json()[listing], f"{path}: nothing listed, so nothing was checked"
                if response.json()["next"]:  # a cursor looks its object up again
                    captured.recording = f"GET {path} (next page)"
                    assert client.get(rel(response.json()["next"]), headers=bearer(access_token)).status_code == 200
            for label, params in (("before/after", {"before": stamp, "after": stamp}), ("windowed grant", {})):
                captured.recording = f"GET usage-segments ({label})"
                access_token = window if label == "windowed grant" else tokens["usage-segments"]
                answer = client.get(f"{API}/usage-segments", params=params, headers=bearer(access_token))
                assert answer.status_code == 200 and answer.json()["usage_segments"], answer.text

            captured.recording = "reconciler"
            try:
                assert reconcile_jobs(gateway.config, lambda job: None, stale_after=0) > 0
            finally:
                sessions_for(gateway.config).kw["bind"].dispose()  # its database is dropped after the test
            captured.recording = "ops dashboard"
            status = collect_status(gateway.sessions, gateway.config, ping_workers=False, broker={})
            assert status["dead"]["count"] == 3 and status["jobs"]
        finally:
            captured.close()

        origins = {origin for origin, _ in captured.statements}
        assert {f"GET {path}" for path in LISTINGS} | {"GET usage-segments (next page)", "reconciler",
                                                       "ops dashboard"} <= origins
        explain = postgres_problems if gateway.engine.dialect.name == "postgresql" else sqlite_problems
        found = {}
        with gateway.engine.connect() as connection:
            for (origin, statement), parameters in captured.statements.items():
                if any(re.search(pattern, statement) for pattern in WHOLE_TABLE):
                    continue
                with connection.begin():
                    problems = explain(connection, statement, parameters)
                if problems:
                    found[f"{origin}: {' '.join(statement.split())[:400]}"] = problems
        assert not found, "statements not served by an index:\n" + "\n".join(
            f"- {where}\n    " + "\n    ".join(problems) for where, problems in found.items())
        # the patterns allowed to read a whole table were met (else the allowance hides nothing and must go)
        assert all(any(re.search(pattern, s) for _, s in captured.statements) for pattern in WHOLE_TABLE)
