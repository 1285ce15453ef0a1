"""What a custodian's answers are trusted for (issue 13 item 1), with the workers' own runtime
(workers.tasks.execute) in this process and two recording peers under uvicorn on 127.0.0.1: ``a``, the configured
custodian ``dc``, and ``b``, another port of the same host. On both backends.

* A job naming another origin (made before the check existed, or by a configuration that changed since) fetches
  nothing and asks for no token; a redirect to another port is not followed.
* An Authorization entry changes a Grant only when its authorizationURI and self href both name an authorization we
  stored for that custodian.
* A bulk part reaches a Grant only through an authorization of the custodian the bulk came from.
* A token response naming resources outside the custodian's endpoint is never stored, nor an imported
  Authorization naming them.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gateway_helpers import consent_flow, continue_to_client, gateway_client, make_config, register
from lxml import etree
from peer_listener import Listener, authorization_feed, listener, token_answer, usage_feed, xml
from sqlalchemy import func, select
from test_custodian_wiring import USAGE_DETAILS, _consent_page, _handle, custodian_toml

from bridge import upstream
from bridge.notifications import accept_notification
from cds.store.models import Grant, Job, UpstreamAuthorization, UsageSegmentRow
from espi.custodian_client import CustodianTokens
from workers import jobs
from workers.tasks import execute

DEAD_PORT = "http://127.0.0.1:9"  # nothing listens: a custodian whose origin is never reached


@dataclass
class World:
    a: Listener
    b: Listener
    client: Any
    config: Any
    gw: Any

    def resource(self, peer: Listener | str) -> str:
        return f"{peer.url if isinstance(peer, Listener) else peer}/espi/1_1/resource"

    def custodian(self, custodian_id: str = "dc") -> Any:
        return next(c for c in self.config.custodians if c.id == custodian_id)

    def grant_behind(self, custodian_id: str, base: str, number: int) -> tuple[str, int]:
        """An active Grant (local consent) bound to an upstream authorization of ``custodian_id`` whose resources
        are ``{base}/…/Subscription/{number}`` and ``{base}/…/Authorization/{number}``."""
        (grant_id,) = consent_flow(self.client.local, register(self.client.local))["cds_grant_ids"]
        with self.gw.sessions() as session, session.begin():
            grant = session.get(Grant, grant_id)
            row = upstream.bind(session, self.gw.box, grant_id=grant_id, custodian_id=custodian_id,
                                customer_id=grant.customer_id, scope="FB=4_5_15", tokens=CustodianTokens(
                                    access_token=f"customer-token-{number}",
                                    resource_uri=f"{base}/espi/1_1/resource/Batch/Subscription/{number}",
                                    authorization_uri=f"{base}/espi/1_1/resource/Authorization/{number}"))
            return grant_id, row.id

    def job(self, kind: str, uri: str, **payload: Any) -> str:
        with self.gw.sessions() as session, session.begin():
            return jobs.enqueue(session, kind, {"custodian_id": "dc", "uri": uri, **payload},
                                f"test:{kind}:{uri}:{payload}", queue="http").job_id

    def notified(self, uri: str) -> str:
        """The job a BatchList naming ``uri`` to dc asks for (accepted, not refused)."""
        with self.gw.sessions() as session, session.begin():
            (accepted,), refused = accept_notification(session, self.custodian(), [uri], datetime.now(UTC))
        assert refused == []
        return accepted.job_id

    def state(self, job_id: str) -> Job:
        with self.gw.sessions() as session:
            job = jobs.get(session, job_id)
            session.expunge(job)
            return job

    def grant_status(self, grant_id: str) -> tuple[str, bool]:
        with self.gw.sessions() as session:
            (row,) = upstream.authorizations_of(session, grant_id)
            return session.get(Grant, grant_id).status, row.revoked is not None

    def segments(self, grant_id: str) -> int:
        with self.gw.sessions() as session:
            data_set = session.get(Grant, grant_id).data_set
            return session.scalar(select(func.count()).select_from(UsageSegmentRow)
                                  .where(UsageSegmentRow.data_set == data_set))


@contextlib.contextmanager
def world(tmp_path, database_url, *, scopes=None):
    with listener() as a, listener() as b:
        extra = {} if scopes is None else {"scopes": scopes}
        config = make_config(tmp_path, database_url, extra_toml=custodian_toml(a.url, "dc", **extra)
                             + custodian_toml(DEAD_PORT, "other", **extra))
        local = make_config(tmp_path, database_url)
        with gateway_client(local) as local_client, gateway_client(config) as client:
            client.local = local_client
            a.answer({"/oauth/token": token_answer()})
            yield World(a, b, client, config, client.app.state.gateway)


# ------------------------------------------------------------------------------ the workers check before acting


def test_jobs_naming_another_origin_fetch_nothing_and_ask_for_no_token(tmp_path, database_url):
    with world(tmp_path, database_url) as w:
        w.a.prove_it_listens()
        w.b.prove_it_listens()
        grant_id, row_id = w.grant_behind("dc", w.a.url, 7)
        elsewhere = w.resource(w.b)  # the same paths on another port of the custodian's host
        made = [
            w.job("fetch_subscription", f"{elsewhere}/Batch/Subscription/7"),
            w.job("fetch_subscription", f"{elsewhere}/Batch/Subscription/7", upstream_id=row_id),
            w.job("fetch_bulk", f"{elsewhere}/Batch/Bulk/1"),
            w.job("fetch_bulk", f"sftp://127.0.0.1:{urlsplit(w.b.url).port}/Bulk/1.xml"),
            w.job("sync_authorization", f"{elsewhere}/Authorization/7"),
            w.job("sync_application_information", f"{elsewhere}/ApplicationInformation/1"),
        ]
        # an authorization stored before the check existed, naming another origin: its revocation is not sent there
        _foreign_grant, foreign_row = w.grant_behind("dc", w.b.url, 8)
        with w.gw.sessions() as session, session.begin():
            made.append(jobs.enqueue(session, "revoke_upstream", {"custodian_id": "dc", "upstream_id": foreign_row},
                                     "test:revoke", queue="http").job_id)
        for job_id in made:
            outcome = execute(w.config, job_id)
            assert outcome is not None and outcome.state == jobs.DEAD, (w.state(job_id).kind, outcome)
            assert "is not one of custodian dc's resources" in w.state(job_id).last_error
        assert w.b.requests() == [] and w.a.requests() == []  # not even a token was asked for
        assert w.grant_status(grant_id) == ("active", False)

        # the same job naming the custodian's own resource does reach it (so the silence above means something)
        w.a.answer({"/oauth/token": token_answer(),
                    "/espi/1_1/resource/Authorization/7": xml(authorization_feed(
                        (f"{w.resource(w.a)}/Authorization/7", f"{w.resource(w.a)}/Authorization/7", 1)))})
        assert execute(w.config, w.notified(f"{w.resource(w.a)}/Authorization/7")) == jobs.Outcome(jobs.DONE)
        assert [(r["method"], r["path"]) for r in w.a.requests()] == [
            ("POST", "/oauth/token"), ("GET", "/espi/1_1/resource/Authorization/7")]


def test_a_redirect_to_another_port_is_not_followed(tmp_path, database_url):
    with world(tmp_path, database_url) as w:
        w.a.answer({"/oauth/token": token_answer(),
                    "/espi/1_1/resource/Batch/Bulk/2": {"status": 302, "headers": {
                        "Location": f"{w.resource(w.b)}/Batch/Bulk/2"}},
                    "/espi/1_1/resource/Batch/Bulk/3": {"status": 307, "headers": {
                        "Location": f"{w.resource(w.a)}/Batch/Bulk/4"}}})
        job_id = w.notified(f"{w.resource(w.a)}/Batch/Bulk/2")
        assert execute(w.config, job_id).state == jobs.DEAD
        assert "not followed" in w.state(job_id).last_error and "127.0.0.1:" in w.state(job_id).last_error
        assert w.b.requests() == []
        # within the custodian's resources a redirect is followed (Bulk/4 answers 404: the job ends dead)
        job_id = w.notified(f"{w.resource(w.a)}/Batch/Bulk/3")
        assert execute(w.config, job_id).state == jobs.DEAD and "404" in w.state(job_id).last_error
        assert [r["path"] for r in w.a.requests() if r["method"] == "GET"] == [
            "/espi/1_1/resource/Batch/Bulk/2", "/espi/1_1/resource/Batch/Bulk/3", "/espi/1_1/resource/Batch/Bulk/4"]


# ------------------------------------------------------------------- what an Authorization feed may change


def test_authorization_entries_change_only_the_authorizations_we_stored(tmp_path, database_url):
    with world(tmp_path, database_url) as w:
        grant_id, _row = w.grant_behind("dc", w.a.url, 7)
        other_grant, _other_row = w.grant_behind("other", DEAD_PORT, 5)
        ours = f"{w.resource(w.a)}/Authorization/7"
        forged = {
            "self on another port": ((f"{w.resource(w.b)}/Authorization/7", ours, 0), "not the custodian's"),
            "self names another authorization": ((f"{w.resource(w.a)}/Authorization/8", ours, 0),
                                                 "name different resources"),
            "an authorization we never stored": ((f"{w.resource(w.a)}/Authorization/8",
                                                  f"{w.resource(w.a)}/Authorization/8", 0), "no authorization of ours"),
            "another custodian's authorization": ((f"{DEAD_PORT}/espi/1_1/resource/Authorization/5",
                                                   f"{DEAD_PORT}/espi/1_1/resource/Authorization/5", 0),
                                                  "not the custodian's"),
            "no URI at all": ((None, None, 0), "names no authorizationURI"),
        }
        for name, (entry, why) in forged.items():
            w.a.answer({"/oauth/token": token_answer(),
                        "/espi/1_1/resource/Authorization/7": xml(authorization_feed(entry))})
            job_id = w.notified(ours)
            assert execute(w.config, job_id) == jobs.Outcome(jobs.DONE), name
            assert why in w.state(job_id).result and "nothing changed" in w.state(job_id).result, name
            assert w.grant_status(grant_id) == ("active", False), name
            assert w.grant_status(other_grant) == ("active", False), name
        # the genuine entry (its authorizationURI and self both ours) revokes, so the refusals above were choices
        w.a.answer({"/oauth/token": token_answer(),
                    "/espi/1_1/resource/Authorization/7": xml(authorization_feed((ours, ours, 0)))})
        assert execute(w.config, w.notified(ours)) == jobs.Outcome(jobs.DONE)
        assert w.grant_status(grant_id) == ("revoked", True)
        assert w.grant_status(other_grant) == ("active", False)


# ------------------------------------------------------------------------------------ where bulk parts go


def _bulk(*feeds: bytes) -> bytes:
    """One feed holding the entries of several generated feeds (a bulk set of several subscriptions)."""
    root = etree.fromstring(feeds[0])
    for extra in feeds[1:]:
        for entry in etree.fromstring(extra).iterfind("{http://www.w3.org/2005/Atom}entry"):
            root.append(entry)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def test_bulk_parts_reach_only_the_custodians_own_authorizations(tmp_path, database_url):
    with world(tmp_path, database_url) as w:
        ours, ours_row = w.grant_behind("dc", w.a.url, 7)
        theirs, theirs_row = w.grant_behind("other", DEAD_PORT, 5)
        start = date.today() - timedelta(days=20)
        # dc's bulk names its own subscription 7, and subscription 5, with hrefs at the other custodian's origin:
        # subscription ids are the custodian's own, so 5 is nobody's here, whoever else has a subscription 5
        w.a.answer({"/oauth/token": token_answer(), "/espi/1_1/resource/Batch/Bulk/1": xml(_bulk(
            usage_feed(f"{w.resource(w.a)}", "7", start, seed=7),
            usage_feed(f"{DEAD_PORT}/espi/1_1/resource", "5", start, seed=5)))})
        published: list[str] = []
        bulk_job = w.notified(f"{w.resource(w.a)}/Batch/Bulk/1")
        assert execute(w.config, bulk_job, lambda job_id, _queue: published.append(job_id)) == jobs.Outcome(jobs.DONE)
        assert "1 ingest job(s), 1 unclaimed" in w.state(bulk_job).result
        (part,) = [w.state(job_id) for job_id in published]
        assert part.payload["upstream_id"] == ours_row and part.payload["subscription_id"] == "7"
        assert execute(w.config, part.job_id) == jobs.Outcome(jobs.DONE)
        assert w.segments(ours) > 0 and w.segments(theirs) == 0

        # a part job pointed at another custodian's authorization (a tampered row) is refused, as is one whose
        # bulk came from another origin
        for payload in ({"upstream_id": theirs_row, "subscription_id": "5", "bulk": f"{w.resource(w.a)}/Batch/Bulk/1"},
                        {"upstream_id": ours_row, "subscription_id": "5", "bulk": f"{w.resource(w.a)}/Batch/Bulk/1"},
                        {"upstream_id": ours_row, "subscription_id": "7", "bulk": f"{w.resource(w.b)}/Batch/Bulk/1"}):
            part_file = tmp_path / f"part-{len(published)}.xml"
            part_file.write_bytes(usage_feed(f"{w.resource(w.a)}", payload["subscription_id"], start, seed=9))
            with w.gw.sessions() as session, session.begin():
                job_id = jobs.enqueue(session, "ingest_bulk_part", {"custodian_id": "dc", "path": str(part_file),
                                                                    **payload}, f"test:{payload}").job_id
            assert execute(w.config, job_id).state == jobs.DEAD, payload
            assert w.state(job_id).last_error, payload
        assert w.segments(theirs) == 0


def test_the_bulk_job_reports_the_part_no_authorization_of_its_custodian_holds(tmp_path, database_url):
    with world(tmp_path, database_url) as w:
        w.grant_behind("other", DEAD_PORT, 5)
        start = date.today() - timedelta(days=20)
        w.a.answer({"/oauth/token": token_answer(), "/espi/1_1/resource/Batch/Bulk/1": xml(
            usage_feed(f"{DEAD_PORT}/espi/1_1/resource", "5", start, seed=5))})
        job_id = w.notified(f"{w.resource(w.a)}/Batch/Bulk/1")
        published: list[str] = []
        assert execute(w.config, job_id, lambda j, _q: published.append(j)) == jobs.Outcome(jobs.DONE)
        done = w.state(job_id)
        assert published == [] and "0 ingest job(s), 1 unclaimed" in done.result and "5" in done.warning


# ------------------------------------------------------------------------------ token responses are checked


def test_a_token_response_naming_other_origins_is_never_stored(tmp_path, database_url):
    from sandbox.config import DEFAULT_SCOPES

    with world(tmp_path, database_url, scopes=DEFAULT_SCOPES) as w:
        registration = register(w.client, "cds_client_admin cds_usage_dc cds_usage_1")
        details = [{**USAGE_DETAILS[0], "type": "cds_usage_dc"}]

        def consent_through_dc(**uris: str):
            page = _consent_page(w.client, registration, "cds_usage_dc", details)
            assert page.status_code == 200, page.text
            answer = w.client.post("/oauth/authorize", data={"consent": _handle(page), "decision": "approve",
                                                             "custodian": "dc"})
            assert answer.status_code == 303 and answer.headers["location"].startswith(w.a.url), answer.text
            state = parse_qs(urlsplit(answer.headers["location"]).query)["state"][0]
            w.a.answer({"/oauth/token": token_answer(**uris)})
            return w.client.get("/custodians/dc/callback", params={"code": "upstream-code", "state": state})

        def stored() -> int:
            with w.gw.sessions() as session:
                return session.scalar(select(func.count()).select_from(UpstreamAuthorization))

        for uris in ({"resourceURI": f"{w.resource(w.b)}/Batch/Subscription/7",
                      "authorizationURI": f"{w.resource(w.a)}/Authorization/7"},
                     {"resourceURI": f"{w.resource(w.a)}/Batch/Subscription/7",
                      "authorizationURI": f"{w.resource(w.b)}/Authorization/7"},
                     {"resourceURI": f"{w.resource(w.a)}/Batch/Subscription/7",
                      "authorizationURI": f"{w.resource(w.a)}/Authorization/7",
                      "customerResourceURI": "https://evil.example/espi/1_1/resource/Batch/RetailCustomer/1"}):
            answer = consent_through_dc(**uris)
            assert answer.status_code == 302, answer.text
            query = parse_qs(urlsplit(answer.headers["location"]).query)
            assert query["error"] == ["temporarily_unavailable"], query
            assert "outside its configured endpoint" in query["error_description"][0]
            assert stored() == 0
        # the same answer naming the custodian's own resources completes the consent
        approved = consent_through_dc(resourceURI=f"{w.resource(w.a)}/Batch/Subscription/7",
                                      authorizationURI=f"{w.resource(w.a)}/Authorization/7")
        answer = continue_to_client(w.client, approved)  # the receipt's confirmation page, then Continue
        assert "code=" in answer.headers["location"], answer.text
        assert stored() == 1
        assert re.search(r"\bstate=s-1\b", answer.headers["location"])


def test_imported_authorizations_naming_other_origins_are_skipped(tmp_path, database_url):
    from greenbridge.commands.custodian import import_authorizations
    from sandbox.config import DEFAULT_SCOPES

    with world(tmp_path, database_url, scopes=DEFAULT_SCOPES) as w:
        usage = register(w.client, "cds_client_admin cds_usage_dc").client_for("cds_usage_dc")
        ours, elsewhere = w.resource(w.a), w.resource(w.b)

        def authorization(number: int, resource: str, authorization_base: str) -> dict[str, Any]:
            return {"self": f"{authorization_base}/Authorization/{number}", "status": 1, "scope": DEFAULT_SCOPES[0],
                    "resourceURI": f"{resource}/Batch/Subscription/{number}",
                    "authorizationURI": f"{authorization_base}/Authorization/{number}"}

        w.a.answer({"/oauth/token": token_answer(), "/espi/1_1/resource/Authorization": xml(authorization_feed(
            authorization(1, ours, ours), authorization(2, elsewhere, ours), authorization(3, ours, elsewhere)))})
        result = import_authorizations(w.config, "dc", usage["client_id"])
        assert [uri for uri, _grant in result.created] == [f"{ours}/Authorization/1"]
        skipped = dict(result.skipped)
        assert skipped[f"{ours}/Authorization/2"].startswith("not the custodian's resources: resourceURI: origin")
        assert "authorizationURI: origin" in skipped[f"{elsewhere}/Authorization/3"]
        with w.gw.sessions() as session:
            stored = session.scalars(select(UpstreamAuthorization.authorization_uri)).all()
        assert stored == [f"{ours}/Authorization/1"]
        assert w.b.requests() == []
