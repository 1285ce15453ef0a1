"""Upstream work by meaning and by unit (issue 12 items 6 and 7), run by the workers' own runtime
(workers.tasks.execute) in this process against the real sandbox custodian under uvicorn, on both backends.

* Two Grants behind one subscription: a BatchList naming it fans out one fetch job per upstream authorization,
  and a 503 (the sandbox's outage control) retries only the fetch it hit, no earlier than its Retry-After.
* A custodian that cannot revoke (the sandbox answering DELETE Authorization with 405 or 501): the revocation job
  ends ``done`` saying so, the authorization ends on our side; a 503 before it is retried, not fatal.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import httpx2
import pytest
from conftest import REPO
from gateway_helpers import consent_flow, gateway_client, make_config, register
from servers import uvicorn_server
from test_custodian_client import CLIENT_ID, CLIENT_SECRET, connect, sandbox_env

from bridge import lifecycle, upstream
from bridge.notifications import accept_notification
from cds.store.models import Grant, Job, UpstreamAuthorization
from workers import jobs
from workers.tasks import execute


def _custodian_toml(base: str) -> str:
    return f"""
[[custodians]]
id = "sandbox"
name = "Sandbox Power & Light"
resource_url = "{base}/espi/1_1/resource"
authorize_url = "{base}/oauth/authorize"
token_url = "{base}/oauth/token"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
hosts = ["127.0.0.1"]
"""


@contextlib.contextmanager
def _bridge(tmp_path, database_url, **sandbox_switches: str):
    """The sandbox (uvicorn), and the gateway's store and objects in this process (``.local``: a gateway without
    custodians on the same store, whose consent flow makes Grants without the upstream hop)."""
    with uvicorn_server("sandbox.app:create_sandbox_app", env=sandbox_env(**sandbox_switches), app_dir=REPO,
                        health_path="/healthz") as url:
        base = str(url)
        local = make_config(tmp_path, database_url)
        config = make_config(tmp_path, database_url, extra_toml=_custodian_toml(base))
        with gateway_client(local) as local_client, gateway_client(config) as client:
            client.local, client.base, client.config = local_client, base, config
            yield client, client.app.state.gateway


def _grant_behind(client, gw, tokens) -> tuple[str, int]:
    """A pending Grant bound to the custodian's authorization ``tokens`` (as the consent hop binds it)."""
    (grant_id,) = consent_flow(client.local, register(client.local))["cds_grant_ids"]
    with gw.sessions() as session, session.begin():
        grant = session.get(Grant, grant_id)
        grant.status, grant.enabled_scope, grant.enabled_authorization_details = "pending", "", []
        row = upstream.bind(session, gw.box, grant_id=grant_id, custodian_id="sandbox", customer_id=grant.customer_id,
                            scope=tokens.scope, tokens=tokens)
        return grant_id, row.id


def _job(gw, job_id: str) -> Job:
    with gw.sessions() as session:
        return jobs.get(session, job_id)


def _outage(base: str, **form: str) -> None:
    answer = httpx2.post(f"{base}/sandbox/outage", data=form, timeout=30)
    assert answer.status_code == 200, answer.text


def test_one_failed_fetch_retries_only_its_own_authorization(tmp_path, database_url):
    with _bridge(tmp_path, database_url) as (client, gw):
        _custodian_client, tokens = connect(client.base, tmp_path)
        grants = dict(_grant_behind(client, gw, tokens) for _ in range(2))  # two Grants behind one subscription
        custodian = client.config.custodians[0]
        with gw.sessions() as session, session.begin():
            (notified,), refused = accept_notification(session, custodian, [tokens.resource_uri], datetime.now(UTC))
        assert refused == [] and notified.kind == "fetch_subscription"
        published: list[str] = []
        fan_out = execute(client.config, notified.job_id, lambda job_id, _queue: published.append(job_id))
        assert fan_out == jobs.Outcome(jobs.DONE) and len(published) == 2
        fetches = {_job(gw, job_id).payload["upstream_id"]: job_id for job_id in published}
        assert set(fetches) == set(grants.values())  # one fetch job per upstream authorization

        _outage(client.base, requests="1", retry_after="30")  # the custodian fails the next request
        before = datetime.now(UTC)
        first, second = (execute(client.config, job_id) for job_id in published)
        assert first.state == jobs.FAILED and first.run_after >= before + timedelta(seconds=30)  # Retry-After
        assert second == jobs.Outcome(jobs.DONE)
        failed, done = _job(gw, published[0]), _job(gw, published[1])
        assert "503" in failed.last_error and failed.attempts == 1
        grant_of = {row_id: grant_id for grant_id, row_id in grants.items()}
        assert done.result.startswith(f"grant {grant_of[done.payload['upstream_id']]}: ")

        with gw.sessions() as session, session.begin():  # the retry comes due
            session.get(Job, failed.job_id).run_after = datetime.now(UTC)
        assert execute(client.config, failed.job_id) == jobs.Outcome(jobs.DONE)
        assert _job(gw, failed.job_id).attempts == 2
        assert _job(gw, done.job_id).attempts == 1  # the other authorization was never fetched again
        with gw.sessions() as session:
            assert {session.get(Grant, g).status for g in grants} == {"active"}


@pytest.mark.parametrize("status", ["405", "501"])
def test_a_custodian_that_cannot_revoke_ends_the_authorization_on_our_side(tmp_path, database_url, status,
                                                                             monkeypatch, capsys):
    with _bridge(tmp_path, database_url, GREENBRIDGE_SANDBOX_DELETE_AUTHORIZATION_STATUS=status) as (client, gw):
        _custodian_client, tokens = connect(client.base, tmp_path)
        grant_id, row_id = _grant_behind(client, gw, tokens)
        with gw.sessions() as session, session.begin():
            session.get(Grant, grant_id).status = "closed"
            (revocation,) = lifecycle.end_upstream(session, grant_id, datetime.now(UTC))
        _outage(client.base, requests="1", retry_after="0")  # first a transient failure
        assert execute(client.config, revocation.job_id).state == jobs.FAILED
        with gw.sessions() as session:
            assert session.get(UpstreamAuthorization, row_id).revoked is None
        with gw.sessions() as session, session.begin():
            session.get(Job, revocation.job_id).run_after = datetime.now(UTC)
        assert execute(client.config, revocation.job_id) == jobs.Outcome(jobs.DONE)  # once, not 8 times
        job = _job(gw, revocation.job_id)
        assert job.attempts == 2 and job.last_error is None
        assert f"cannot revoke (DELETE answered {status})" in job.result and "ended on our side" in job.result
        with gw.sessions() as session:
            assert session.get(UpstreamAuthorization, row_id).revoked is not None
            assert lifecycle.authorizations_for_resource(session, "sandbox", tokens.resource_uri) == []
        number = int(tokens.authorization_uri.rsplit("/", 1)[1])
        upstream_state = httpx2.get(f"{client.base}/sandbox.json", timeout=30).json()["authorizations"]
        assert next(a for a in upstream_state if a["id"] == number)["status"] == 1  # still active there

        # the operator sees it in the job's listing, not as an error
        from greenbridge.cli import main

        for name, value in {"GREENBRIDGE_DATABASE_URL": client.config.database_url,
                            "GREENBRIDGE_SECRET_KEY": "k", "GREENBRIDGE_DATA_DIR": str(tmp_path / "var")}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("GREENBRIDGE_REDIS_URL", raising=False)
        monkeypatch.delenv("GREENBRIDGE_CONFIG", raising=False)
        assert main(["jobs", "list", "--kind", "revoke_upstream"]) == 0
        listed = capsys.readouterr().out
        assert "done" in listed and "cannot revoke" in listed
