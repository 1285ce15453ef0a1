"""Bounded work per notification (issue 13 item 2): a cap on the URIs one POST acts on, a per-custodian rate of
notified URIs (429 with Retry-After, nothing kept), one aggregated log line of what was refused, and client tokens
kept in the store and shared by the worker processes (one token request per token lifetime).

The rate and the token cache are store rows written by guarded UPDATEs, so concurrent receivers and workers are
tested with threads on both backends; the cap and the token cache end to end on the real stack (two worker
processes, the sandbox counting what reaches it in its access log).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx2
import pytest
from bridge_stack import start_bridge
from gateway_helpers import gateway_client, make_config
from peer_listener import listener, token_answer
from sqlalchemy import select
from test_notification_receiver import CUSTODIANS, custodian_toml

from bridge import upstream
from bridge.notifications import spend
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from cds.store.models import CustodianToken, Job
from espi.custodian_client import CustodianTokens

XML = {"Content-Type": "application/xml"}
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def sessions(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def _concurrently(count: int, action) -> list:
    """``action()`` in ``count`` threads released together; their results."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(30)
            results[index] = action()
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return results


# ---------------------------------------------------------------------------------------------- the rate


def test_the_rate_counts_per_key_and_minute(sessions):
    def spent(amount: int, at: datetime, key: str = "notification:dc", limit: int = 5) -> int:
        with sessions() as session, session.begin():
            return spend(session, key, amount, limit, at)

    assert spent(3, T0) == 0
    assert spent(2, T0 + timedelta(seconds=10)) == 0
    assert spent(1, T0 + timedelta(seconds=15)) == 45  # full: the next window starts in 45 s
    assert spent(1, T0, key="notification:other") == 0  # another custodian has its own
    assert spent(5, T0 + timedelta(seconds=60)) == 0  # a new window
    assert spent(6, T0 + timedelta(seconds=200)) == 40  # more than the limit never fits
    with sessions() as session, session.begin():  # a refused spend counts nothing
        assert spend(session, "notification:dc", 2, 5, T0 + timedelta(seconds=61)) == 59
        session.rollback()
    assert spent(0, T0 + timedelta(seconds=62)) == 0


def test_concurrent_receivers_never_spend_more_than_the_limit(sessions):
    at = T0 + timedelta(hours=1)

    def one() -> int:
        with sessions() as session, session.begin():
            return spend(session, "notification:race", 1, 6, at)

    results = _concurrently(10, one)
    assert sorted(results) == [0] * 6 + [60] * 4


# ----------------------------------------------------------------------------------- cap and rate over HTTP


def _dc_uris(count: int, start: int = 1) -> list[str]:
    return [f"https://dc.example/espi/1_1/resource/Batch/Bulk/{n}" for n in range(start, start + count)]


def _post(client, uris, path="/espi/1_1/Notification"):
    body = "<BatchList>" + "".join(f"<resources>{u}</resources>" for u in uris) + "</BatchList>"
    return client.post(path, content=body.encode(), headers=XML)


def _jobs(client) -> list[Job]:
    with client.app.state.gateway.sessions() as session:
        return list(session.scalars(select(Job)))


LIMITED = CUSTODIANS.replace('client_id = "client-dc"', 'client_id = "client-dc"\nnotification_uri_cap = 5', 1)


def test_one_post_acts_on_at_most_the_cap_and_logs_one_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gateway.routes.notifications")
    with gateway_client(make_config(tmp_path, extra_toml=LIMITED)) as client:
        uris = [*_dc_uris(12), *_dc_uris(3), "https://evil.example/espi/1_1/resource/Batch/Bulk/1",
                "https://dc.example:8443/espi/1_1/resource/Batch/Bulk/1"]
        assert _post(client, uris, "/custodians/dc/notify").status_code == 200
        jobs = _jobs(client)
        assert len(jobs) == 5 and {j.payload["uri"] for j in jobs} == set(_dc_uris(5))  # the first five
        (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert "9 URI(s) refused" in line and "over the cap of 5 URIs acted on per notification (7)" in line
        assert "origin https://dc.example:8443 is not the custodian's (1)" in line
        assert "origin https://evil.example:443 is not the custodian's (1)" in line
        # the gateway's default cap (100) for a custodian without its own
        caplog.clear()
        local = [f"http://localhost:8080/DataCustodian/espi/1_1/resource/Batch/Bulk/{n}" for n in range(150)]
        assert _post(client, local).status_code == 200
        assert len([j for j in _jobs(client) if j.payload["custodian_id"] == "local"]) == 100
        (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert "over the cap of 100 URIs acted on per notification (50)" in line


RATED = CUSTODIANS.replace('client_id = "client-dc"',
                           'client_id = "client-dc"\nnotification_uri_cap = 3\nnotification_jobs_per_minute = 4', 1)


def test_beyond_the_rate_a_post_is_429_and_nothing_of_it_is_kept(tmp_path):
    for attempt in range(3):  # the window is the clock's minute: a run straddling two minutes is run again
        minute = time.time() // 60
        (tmp_path / str(attempt)).mkdir()
        with gateway_client(make_config(tmp_path / str(attempt), extra_toml=RATED)) as client:
            first = _post(client, _dc_uris(3), "/custodians/dc/notify")
            over = _post(client, _dc_uris(2, start=10), "/custodians/dc/notify")
            jobs_after_over = len(_jobs(client))
            mixed = _post(client, [*_dc_uris(2, start=20), "http://localhost:8080/DataCustodian/espi/1_1/resource/"
                                   "Batch/Bulk/1"])
            jobs_after_mixed = sorted(j.payload["uri"] for j in _jobs(client))
            other = _post(client, ["http://localhost:8080/DataCustodian/espi/1_1/resource/Batch/Bulk/1"])
            fits = _post(client, _dc_uris(1, start=30), "/custodians/dc/notify")
            jobs_at_end = len(_jobs(client))
        if time.time() // 60 == minute:
            break
    assert first.status_code == 200
    assert over.status_code == 429 and 1 <= int(over.headers["retry-after"]) <= 60
    assert "send this BatchList again" in over.text and jobs_after_over == 3
    # the shared URL: one custodian over its rate refuses the whole POST, the other custodian's URI included
    assert mixed.status_code == 429 and jobs_after_mixed == sorted(_dc_uris(3))
    assert other.status_code == 200  # the other custodian has its own rate
    assert fits.status_code == 200 and jobs_at_end == 5  # what fits the rest of the minute is acted on


def test_a_rate_below_the_cap_is_a_configuration_error(tmp_path):
    from bridge.config import ConfigError

    text = CUSTODIANS.replace('client_id = "client-dc"', 'client_id = "client-dc"\nnotification_jobs_per_minute = 50')
    with pytest.raises(ConfigError, match="notification_jobs_per_minute"):
        make_config(tmp_path, extra_toml=text)
    with pytest.raises(ConfigError, match="positive integer"):
        make_config(tmp_path, extra_toml=CUSTODIANS.replace('client_id = "client-dc"',
                                                            'client_id = "client-dc"\nnotification_uri_cap = 0'))


# --------------------------------------------------------------------------------------------- client tokens


def _dc(tmp_path):
    config = make_config(tmp_path, extra_toml=CUSTODIANS)
    from gateway.context import build_gateway

    return next(c for c in config.custodians if c.id == "dc"), build_gateway(config, migrate=False).box


def test_client_tokens_are_kept_encrypted_until_due(tmp_path, sessions):
    dc, box = _dc(tmp_path)
    lease = timedelta(seconds=90)

    def cached(at: datetime, custodian=dc, scope=None):
        with sessions() as session:
            return upstream.cached_client_token(session, box, custodian, scope, at)[0]

    def claim(at: datetime, scope=None) -> bool:
        with sessions() as session, session.begin():
            _token, seen = upstream.cached_client_token(session, box, dc, scope, at)
            return upstream.claim_client_token_request(session, dc, scope, at, lease, seen)

    def store(token: str, at: datetime, expires_at: datetime | None) -> None:
        with sessions() as session, session.begin():
            upstream.store_client_token(session, box, dc, None, CustodianTokens(token, expires_at=expires_at), at)

    assert cached(T0) is None
    assert claim(T0) and not claim(T0 + timedelta(seconds=5))  # one process asks; the others wait
    store("client-token-1", T0, T0 + timedelta(hours=1))
    assert cached(T0 + timedelta(minutes=57)) == "client-token-1"
    assert cached(T0 + timedelta(minutes=58)) is None  # due: 120 s before it expires
    assert cached(T0, scope="FB=36_40") is None  # the registration token is another
    with sessions() as session:
        row = session.get(CustodianToken, ("dc", ""))
        assert "client-token-1" not in row.access_token_encrypted and row.requesting_until is None
    assert cached(T0, custodian=replace(dc, client_secret="another-secret")) is None  # issued to other credentials
    # a short-lived token is used for half its life; one answered without expires_in for an hour
    store("client-token-2", T0, T0 + timedelta(seconds=60))
    assert cached(T0 + timedelta(seconds=29)) == "client-token-2" and cached(T0 + timedelta(seconds=30)) is None
    store("client-token-3", T0, None)
    assert cached(T0 + timedelta(minutes=57)) == "client-token-3"
    # a lease whose holder died runs out; a 401 drops the token unless a newer one was stored meanwhile
    later = T0 + timedelta(hours=2)
    assert claim(later) and not claim(later + timedelta(seconds=89)) and claim(later + timedelta(seconds=90))
    store("client-token-4", later, later + timedelta(hours=1))
    with sessions() as session, session.begin():
        upstream.forget_client_token(session, box, dc, None, "an older token")
    assert cached(later) == "client-token-4"
    with sessions() as session, session.begin():
        upstream.forget_client_token(session, box, dc, None, "client-token-4")
    assert cached(later) is None


def test_a_claim_after_a_token_was_stored_since_the_look_fails(tmp_path, sessions):
    """The race of two workers: one looked (no token yet) while the other was asking; the other stored its token
    and ended its lease; the late claim must not ask again."""
    dc, box = _dc(tmp_path)
    with sessions() as session, session.begin():
        assert upstream.claim_client_token_request(session, dc, None, T0, timedelta(seconds=90), None)
    with sessions() as session:
        _token, seen_by_the_late_one = upstream.cached_client_token(session, box, dc, None, T0)
    with sessions() as session, session.begin():
        upstream.store_client_token(session, box, dc, None, CustodianTokens(
            "client-token", expires_at=T0 + timedelta(hours=1)), T0)
    with sessions() as session, session.begin():
        assert not upstream.claim_client_token_request(session, dc, None, T0, timedelta(seconds=90),
                                                       seen_by_the_late_one)
    with sessions() as session:
        assert upstream.cached_client_token(session, box, dc, None, T0)[0] == "client-token"


def test_concurrent_workers_make_one_token_request(tmp_path, sessions):
    dc, box = _dc(tmp_path)

    def claim() -> bool:
        with sessions() as session, session.begin():
            _token, seen = upstream.cached_client_token(session, box, dc, None, T0)
            return upstream.claim_client_token_request(session, dc, None, T0, timedelta(seconds=90), seen)

    assert sorted(_concurrently(8, claim)) == [False] * 7 + [True]


def test_a_401_drops_the_stored_client_token_and_asks_once_more(tmp_path, database_url):
    from workers import jobs
    from workers.tasks import execute

    with listener() as peer:
        config = make_config(tmp_path, database_url, extra_toml=custodian_toml("dc", peer.url))
        with gateway_client(config) as client:
            peer.answer({"/oauth/token": token_answer(), "/espi/1_1/resource/Batch/Bulk/1": {"status": 401}})
            gw = client.app.state.gateway
            with gw.sessions() as session, session.begin():
                job_id = jobs.enqueue(session, "fetch_bulk", {"custodian_id": "dc",
                                                              "uri": f"{peer.url}/espi/1_1/resource/Batch/Bulk/1"},
                                      "test:401", queue="http").job_id
            assert execute(config, job_id).state == jobs.DEAD
            assert [(r["method"], r["path"]) for r in peer.requests()] == [
                ("POST", "/oauth/token"), ("GET", "/espi/1_1/resource/Batch/Bulk/1"),
                ("POST", "/oauth/token"), ("GET", "/espi/1_1/resource/Batch/Bulk/1")]
            with gw.sessions() as session:
                assert session.get(CustodianToken, ("dc", "")).access_token_encrypted  # the new one is kept


# --------------------------------------------------------------------------------------------- end to end


def _count(log_text: str, needle: str) -> int:
    return sum(1 for line in log_text.splitlines() if needle in line)


@pytest.mark.slow
def test_one_post_naming_many_uris_makes_at_most_the_cap_of_jobs_and_one_token_request(tmp_path):
    cap, named = 40, 100
    with start_bridge(tmp_path, customers=1, days=2, workers=2,
                      custodian_toml=f"notification_uri_cap = {cap}\n") as bridge:
        sandbox_log = bridge.directory / "sandbox.log"
        tokens_before = _count(sandbox_log.read_text(), '"POST /oauth/token')
        uris = [f"{bridge.sandbox}/espi/1_1/resource/Batch/Bulk/{n}" for n in range(1, named + 1)]
        body = "<BatchList>" + "".join(f"<resources>{u}</resources>" for u in uris) + "</BatchList>"
        answer = httpx2.post(f"{bridge.gateway}/espi/1_1/Notification", content=body, headers=XML, timeout=60)
        assert answer.status_code == 200
        jobs = bridge.wait_jobs_settled(kinds={"fetch_bulk"}, timeout=180)
        assert len(jobs) == cap and {j.payload["uri"] for j in jobs} == set(uris[:cap])
        log = sandbox_log.read_text()
        assert _count(log, '"GET /espi/1_1/resource/Batch/Bulk/') == cap  # one GET per job, none for the rest
        assert _count(log, '"POST /oauth/token') - tokens_before == 1  # four concurrent runs, one token request
        refused = [line for line in bridge.gateway_log.read_text().splitlines() if "URI(s) refused" in line]
        assert len(refused) == 1 and f"over the cap of {cap} URIs acted on per notification ({named - cap})" \
            in refused[0]
        gateway = bridge.box()
        try:
            with gateway.sessions() as session:
                (row,) = session.scalars(select(CustodianToken)).all()
                token = gateway.box.decrypt(row.access_token_encrypted)
                assert token and token not in row.access_token_encrypted and row.expires_at > datetime.now(UTC)
        finally:
            gateway.engine.dispose()
