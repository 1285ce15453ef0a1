"""The jobs table state machine (workers.jobs) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from workers import jobs

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def sessions(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def _enqueue(sessions, key="k1", **options):
    with sessions() as session, session.begin():
        return jobs.enqueue(session, "ingest_file", {"path": "/x.xml", "customer_id": "c1"}, key, now=T0, **options)


def _claim(sessions, job_id, now=T0, lease=60):
    with sessions() as session, session.begin():
        return jobs.claim(session, job_id, lease_seconds=lease, now=now)


def _state(sessions, job_id):
    with sessions() as session:
        return jobs.get(session, job_id)


def test_enqueue_is_idempotent_by_dedupe_key(sessions):
    first = _enqueue(sessions)
    again = _enqueue(sessions)
    assert again.job_id == first.job_id and again.state == jobs.QUEUED and again.attempts == 0
    assert again.payload == {"path": "/x.xml", "customer_id": "c1"} and again.queue == "translate"
    assert _enqueue(sessions, key="k2").job_id != first.job_id
    with sessions() as session, session.begin():  # a job that already ran is returned as it is, not re-armed
        job = jobs.claim(session, first.job_id, now=T0)
        assert jobs.done(session, job, now=T0)
    assert _enqueue(sessions).state == jobs.DONE
    with sessions() as session, session.begin(), pytest.raises(ValueError, match="queue"):
        jobs.enqueue(session, "x", {}, "k3", queue="nope")


def test_claim_is_guarded_and_outcomes_fenced_by_attempt(sessions):
    job_id = _enqueue(sessions).job_id
    run = _claim(sessions, job_id)
    assert run.state == jobs.RUNNING and run.attempts == 1 and run.lease_until == T0 + timedelta(seconds=60)
    assert _claim(sessions, job_id, now=T0 + timedelta(seconds=30)) is None  # a second worker gets nothing
    # the lease expires (worker died): another run takes over, and the first run can no longer record anything
    takeover = _claim(sessions, job_id, now=T0 + timedelta(seconds=61))
    assert takeover.attempts == 2
    with sessions() as session, session.begin():
        assert not jobs.done(session, run, now=T0 + timedelta(seconds=62))
        assert jobs.failed(session, run, "late", now=T0 + timedelta(seconds=62)) is None
        assert jobs.done(session, takeover, now=T0 + timedelta(seconds=63))
    final = _state(sessions, job_id)
    assert final.state == jobs.DONE and final.finished == T0 + timedelta(seconds=63) and final.lease_until is None
    assert _claim(sessions, job_id, now=T0 + timedelta(days=1)) is None  # done is final: redelivery claims nothing


def test_backoff_with_jitter_bounds():
    for attempt in range(1, 12):
        ceiling = min(jobs.BACKOFF_MAX, jobs.BACKOFF_BASE * 2 ** (attempt - 1))
        assert jobs.backoff_delay(attempt, rand=lambda: 0.0) == ceiling / 2
        assert jobs.backoff_delay(attempt, rand=lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)
        for _ in range(50):
            assert ceiling / 2 <= jobs.backoff_delay(attempt) <= ceiling
    assert jobs.backoff_delay(30) <= jobs.BACKOFF_MAX


def test_retry_after_parsing():
    assert jobs.retry_after_seconds("120") == 120.0
    assert jobs.retry_after_seconds(format_datetime(T0 + timedelta(minutes=5), usegmt=True), now=T0) == 300.0
    assert jobs.retry_after_seconds(format_datetime(T0 - timedelta(minutes=5), usegmt=True), now=T0) == 0.0
    assert jobs.retry_after_seconds("9999999") == jobs.RETRY_AFTER_MAX
    assert jobs.retry_after_seconds("soon") is None and jobs.retry_after_seconds(None) is None


def test_failed_backs_off_honours_retry_after_and_dies_after_max_attempts(sessions):
    job_id = _enqueue(sessions, max_attempts=3).job_id
    now = T0
    run = _claim(sessions, job_id, now=now)
    with sessions() as session, session.begin():
        outcome = jobs.failed(session, run, "boom", now=now, rand=lambda: 0.5)
    assert outcome.state == jobs.FAILED and outcome.run_after == now + timedelta(seconds=3.75)  # 5 s · [½, 1]
    row = _state(sessions, job_id)
    assert row.state == jobs.FAILED and row.last_error == "boom" and row.run_after == outcome.run_after
    assert _claim(sessions, job_id, now=now + timedelta(seconds=1)) is None  # not due yet
    now = outcome.run_after
    run = _claim(sessions, job_id, now=now)
    assert run.attempts == 2
    with sessions() as session, session.begin():  # the upstream said Retry-After: 120, longer than the backoff
        outcome = jobs.failed(session, run, "429", retry_after=120, now=now, rand=lambda: 1.0)
    assert outcome.run_after == now + timedelta(seconds=120)
    now = outcome.run_after
    run = _claim(sessions, job_id, now=now)
    assert run.attempts == 3
    with sessions() as session, session.begin():
        assert jobs.failed(session, run, "boom again", now=now).state == jobs.DEAD
    row = _state(sessions, job_id)
    assert row.state == jobs.DEAD and "boom again" in row.last_error and row.finished == now
    assert _claim(sessions, job_id, now=now + timedelta(days=1)) is None


def test_deferred_resumes_when_due_and_permanent_errors_are_dead(sessions):
    job_id = _enqueue(sessions, max_attempts=1).job_id
    run = _claim(sessions, job_id)
    with sessions() as session, session.begin():
        assert jobs.deferred(session, run, T0 + timedelta(hours=1), now=T0)
    assert _claim(sessions, job_id, now=T0 + timedelta(minutes=59)) is None
    resumed = _claim(sessions, job_id, now=T0 + timedelta(hours=1))  # waiting is not failing: resumes past max
    assert resumed.attempts == 2
    with sessions() as session, session.begin():
        assert jobs.dead(session, resumed, "bad file", now=T0 + timedelta(hours=1))
    assert _state(sessions, job_id).state == jobs.DEAD


def test_reconciler_finds_lost_jobs(sessions):
    fresh = _enqueue(sessions, key="fresh").job_id
    with sessions() as session, session.begin():
        stale = jobs.enqueue(session, "ingest_file", {}, "stale", now=T0 - timedelta(hours=1)).job_id
    crashed = _enqueue(sessions, key="crashed").job_id
    _claim(sessions, crashed, now=T0, lease=60)
    last_try = _enqueue(sessions, key="last", max_attempts=1).job_id
    _claim(sessions, last_try, now=T0, lease=60)
    due = _enqueue(sessions, key="due").job_id
    with sessions() as session, session.begin():
        jobs.failed(session, _claim(sessions, due, now=T0), "x", now=T0, rand=lambda: 0.0)  # retry at T0 + 2.5 s
    done = _enqueue(sessions, key="done").job_id
    with sessions() as session, session.begin():
        assert jobs.done(session, _claim(sessions, done), now=T0)

    later = T0 + timedelta(seconds=120)
    with sessions() as session, session.begin():
        found = {job.job_id for job in jobs.lost(session, stale_after=900, now=later)}
    assert found == {stale, crashed, due}
    assert fresh not in found and done not in found
    assert _state(sessions, last_try).state == jobs.DEAD  # its lease expired on the last attempt
    assert _claim(sessions, crashed, now=later).attempts == 2  # the crashed run can be taken over
    with sessions() as session, session.begin():  # the stale queued one was touched: not re-published every tick
        again = {job.job_id for job in jobs.lost(session, stale_after=900, now=later + timedelta(seconds=60))}
    # nor the due one: it is published once per due time (issue 13 item 9; it used to be re-published every tick)
    assert stale not in again and due not in again
    with sessions() as session, session.begin():  # still unclaimed a staleness period later: the message was lost
        lost_again = {job.job_id for job in jobs.lost(session, stale_after=900, now=later + timedelta(seconds=901))}
    assert lost_again == {stale, due, fresh, crashed}  # fresh is stale by now, crashed's second run died too


def test_a_store_out_of_reach_is_told_from_a_job_error(tmp_path):
    """A refused connection (PostgreSQL on a port nobody listens on) is the store being away; a constraint
    violation is about the data. execute() says which (StoreUnreachable,
    nothing claimed), so gb.run_job sends its message again instead of dropping it."""
    from types import SimpleNamespace

    from servers import free_port
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from workers.tasks import execute

    refused = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none?connect_timeout=5"
    with pytest.raises(jobs.StoreUnreachable) as caught:
        execute(SimpleNamespace(database_url=refused, job_lease_seconds=60), "some-job")
    assert caught.value.claimed is False and "OperationalError" in str(caught.value)
    assert jobs.store_unreachable(caught.value.__cause__)

    engine = make_engine(f"sqlite+pysqlite:///{tmp_path}/store.db")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO t VALUES (1)"))
    with pytest.raises(IntegrityError) as duplicate, engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (1)"))
    assert not jobs.store_unreachable(duplicate.value)
    engine.dispose()


def test_store_retry_countdown_grows_to_its_cap_and_waits_out_a_lease():
    assert [jobs.store_retry_countdown(n, base=1) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert jobs.store_retry_countdown(0, base=5) == 5 and jobs.store_retry_countdown(9, base=5) == jobs.STORE_RETRY_MAX
    assert jobs.store_retry_countdown(0, base=1, lease=61) == 61  # a claimed run's lease must run out first
    total = sum(jobs.store_retry_countdown(n, base=jobs.BACKOFF_BASE) for n in range(jobs.STORE_RETRIES))
    assert total < jobs.RECONCILE_STALE_AFTER  # the retries end before the reconciler's bound would have
