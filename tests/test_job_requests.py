"""Notifications every time (issue 12 item 2): cds.store.jobs.request_run and the end of a run (workers.jobs) on
SQLite and PostgreSQL.

A notification asks the job of a resource for another run: a job that has not started absorbs it, a running one
runs exactly once more after it (however many notifications arrive meanwhile), a failed one keeps its retry, a
deferred one is due at once, and a done or dead one is queued again. The races (a notification while the run
ends) are played with two real connections.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from cds.store.engine import make_engine, make_sessionmaker
from cds.store.jobs import NEW_JOBS, request_run
from cds.store.migrate import upgrade
from cds.store.models import Job
from workers import jobs

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = "notification:dc:https://dc.example/espi/1_1/resource/Batch/Subscription/7"
PAYLOAD = {"custodian_id": "dc", "uri": "https://dc.example/espi/1_1/resource/Batch/Subscription/7"}


@pytest.fixture
def sessions(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def _request(sessions, now=T0, payload=PAYLOAD, key=KEY) -> tuple[Job, list]:
    """One notification's transaction: the job asked for a run, and what it noted for publishing."""
    with sessions() as session:
        with session.begin():
            job = request_run(session, "fetch_subscription", payload, key, queue="http", now=now)
            noted = list(session.info.get(NEW_JOBS, []))
        session.info.pop(NEW_JOBS, None)
    return job, noted


def _claim(sessions, job_id, now=T0, lease=60):
    with sessions() as session, session.begin():
        return jobs.claim(session, job_id, lease_seconds=lease, now=now)


def _row(sessions, job_id) -> Job:
    with sessions() as session:
        return jobs.get(session, job_id)


def _all(sessions) -> list[Job]:
    with sessions() as session:
        return list(session.scalars(select(Job)))


def test_a_job_not_started_absorbs_the_notification(sessions):
    first, noted = _request(sessions)
    assert first.state == jobs.QUEUED and first.generation == 1 and noted == [(first.job_id, "http")]
    again, noted = _request(sessions, now=T0 + timedelta(seconds=1))
    assert again.job_id == first.job_id and again.state == jobs.QUEUED and again.attempts == 0
    assert noted == [(first.job_id, "http")]  # published again: harmless, and heals a lost message
    assert len(_all(sessions)) == 1


def test_notifications_during_a_run_cause_exactly_one_more_run(sessions):
    job, _ = _request(sessions)
    run = _claim(sessions, job.job_id)
    for n in range(3):  # three BatchLists while the fetch runs
        during, noted = _request(sessions, now=T0 + timedelta(seconds=n))
        assert during.state == jobs.RUNNING and during.rerun and noted == []  # the end of the run publishes it
    with sessions() as session, session.begin():
        outcome = jobs.done(session, run, result="1 reading", now=T0 + timedelta(seconds=5))
        noted = list(session.info.get(NEW_JOBS, []))
    assert outcome == jobs.Outcome(jobs.QUEUED) and noted == [(job.job_id, "http")]
    row = _row(sessions, job.job_id)
    assert (row.state, row.rerun, row.generation, row.finished) == (jobs.QUEUED, False, 2, None)
    assert row.max_attempts == row.attempts + jobs.MAX_ATTEMPTS and row.result == "1 reading"
    second = _claim(sessions, job.job_id, now=T0 + timedelta(seconds=6))
    assert second.attempts == 2
    with sessions() as session, session.begin():
        assert jobs.done(session, second, now=T0 + timedelta(seconds=7)) == jobs.Outcome(jobs.DONE)
    assert _row(sessions, job.job_id).state == jobs.DONE  # one more run, not one per notification


def test_done_and_dead_jobs_never_block_later_notifications(sessions):
    job, _ = _request(sessions)
    run = _claim(sessions, job.job_id)
    with sessions() as session, session.begin():
        assert jobs.done(session, run, now=T0)
    newer = {**PAYLOAD, "requested": None, "resource_id": "7"}
    rearmed, noted = _request(sessions, now=T0 + timedelta(hours=1), payload=newer)
    assert (rearmed.job_id, rearmed.state, rearmed.generation) == (job.job_id, jobs.QUEUED, 2)
    assert rearmed.payload == newer and rearmed.finished is None and noted == [(job.job_id, "http")]
    run = _claim(sessions, job.job_id, now=T0 + timedelta(hours=1))
    with sessions() as session, session.begin():
        assert jobs.dead(session, run, "403 Forbidden", now=T0 + timedelta(hours=1)) == jobs.Outcome(jobs.DEAD)
    rearmed, noted = _request(sessions, now=T0 + timedelta(hours=2))
    assert rearmed.state == jobs.QUEUED and rearmed.generation == 3 and noted == [(job.job_id, "http")]
    assert rearmed.max_attempts == rearmed.attempts + jobs.MAX_ATTEMPTS  # a fresh series of attempts
    assert rearmed.last_error == "403 Forbidden"  # why the previous run died stays visible
    assert _claim(sessions, job.job_id, now=T0 + timedelta(hours=2)).attempts == 3


def test_a_failed_job_keeps_its_retry_and_a_deferred_one_is_due_at_once(sessions):
    job, _ = _request(sessions)
    run = _claim(sessions, job.job_id)
    with sessions() as session, session.begin():
        retry = jobs.failed(session, run, "503", retry_after=120, now=T0)
    absorbed, noted = _request(sessions, now=T0 + timedelta(seconds=1))
    assert absorbed.state == jobs.FAILED and absorbed.run_after == retry.run_after and noted == []
    assert absorbed.generation == 2 and absorbed.attempts == 1  # the retry is a run of the new request
    assert _claim(sessions, job.job_id, now=T0 + timedelta(seconds=2)) is None  # the upstream is not hammered

    other, _ = _request(sessions, key=KEY + "?published-min=2026-03-01T00:00:00Z")
    run = _claim(sessions, other.job_id)
    with sessions() as session, session.begin():
        assert jobs.deferred(session, run, T0 + timedelta(hours=1), now=T0) == jobs.Outcome(
            jobs.DEFERRED, T0 + timedelta(hours=1))
    due, noted = _request(sessions, now=T0 + timedelta(minutes=1), key=KEY + "?published-min=2026-03-01T00:00:00Z")
    assert due.state == jobs.DEFERRED and due.run_after == T0 + timedelta(minutes=1)
    assert noted == [(other.job_id, "http")]
    resumed = _claim(sessions, other.job_id, now=T0 + timedelta(minutes=1))
    assert resumed.attempts == 2 and resumed.payload[jobs.DEFERRED_RUNS] == 1


def test_a_rerun_owed_is_honoured_whatever_the_run_ends_in(sessions):
    def running(key: str) -> Job:
        job, _ = _request(sessions, key=key)
        run = _claim(sessions, job.job_id)
        _request(sessions, key=key)  # a notification during the run
        return run

    # dead: queued afresh (the notification came after whatever killed the run)
    run = running("a")
    with sessions() as session, session.begin():
        assert jobs.dead(session, run, "bad answer", now=T0) == jobs.Outcome(jobs.QUEUED)
    assert (_row(sessions, run.job_id).state, _row(sessions, run.job_id).generation) == (jobs.QUEUED, 2)
    # failed: its retry is the run owed
    run = running("b")
    with sessions() as session, session.begin():
        outcome = jobs.failed(session, run, "timeout", now=T0, rand=lambda: 0.0)
    row = _row(sessions, run.job_id)
    assert outcome.state == jobs.FAILED and (row.state, row.rerun, row.generation) == (jobs.FAILED, False, 2)
    # failed on the last attempt: queued afresh rather than dead
    job, _ = _request(sessions, key="c")
    with sessions() as session, session.begin():
        session.get(Job, job.job_id).max_attempts = 1
    run = _claim(sessions, job.job_id)
    _request(sessions, key="c")
    with sessions() as session, session.begin():
        assert jobs.failed(session, run, "timeout", now=T0).state == jobs.QUEUED
    # deferred (the notification may be the very one saying the 202's data is ready): due at once
    run = running("d")
    with sessions() as session, session.begin():
        assert jobs.deferred(session, run, T0 + timedelta(hours=1), now=T0) == jobs.Outcome(jobs.DEFERRED, T0)
    # the worker died on the last attempt: the reconciler queues it afresh and publishes it
    job, _ = _request(sessions, key="e")
    with sessions() as session, session.begin():
        session.get(Job, job.job_id).max_attempts = 1
    _claim(sessions, job.job_id, lease=10)
    _request(sessions, key="e")
    with sessions() as session, session.begin():
        found = jobs.lost(session, stale_after=900, now=T0 + timedelta(seconds=30))
    assert job.job_id in {j.job_id for j in found}
    row = _row(sessions, job.job_id)
    assert (row.state, row.generation, row.max_attempts) == (jobs.QUEUED, 2, 1 + jobs.MAX_ATTEMPTS)


def test_a_stale_run_cannot_end_the_next_request(sessions):
    """Fencing survives re-arming: attempts keep counting, so the run a lease expiry replaced cannot record an
    outcome over a later request's run."""
    job, _ = _request(sessions)
    stale = _claim(sessions, job.job_id, lease=10)
    takeover = _claim(sessions, job.job_id, now=T0 + timedelta(seconds=11))
    with sessions() as session, session.begin():
        assert jobs.done(session, takeover, now=T0 + timedelta(seconds=12))
    _request(sessions, now=T0 + timedelta(seconds=13))
    current = _claim(sessions, job.job_id, now=T0 + timedelta(seconds=14))
    assert current.attempts == 3 and stale.attempts == 1
    with sessions() as session, session.begin():
        assert jobs.done(session, stale, now=T0 + timedelta(seconds=15)) is None
        assert jobs.dead(session, stale, "late", now=T0 + timedelta(seconds=15)) is None
    assert _row(sessions, job.job_id).state == jobs.RUNNING


def test_deferred_runs_are_counted_per_request(sessions):
    job, _ = _request(sessions)
    for n in range(3):
        run = _claim(sessions, job.job_id, now=T0 + timedelta(hours=n))
        with sessions() as session, session.begin():
            jobs.deferred(session, run, T0 + timedelta(hours=n + 1), payload={"requested": "u"}, now=T0)
    assert _row(sessions, job.job_id).payload[jobs.DEFERRED_RUNS] == 3
    run = _claim(sessions, job.job_id, now=T0 + timedelta(hours=3))
    _request(sessions, now=T0 + timedelta(hours=3))
    with sessions() as session, session.begin():
        assert jobs.done(session, run, now=T0 + timedelta(hours=3)).state == jobs.QUEUED
    assert jobs.DEFERRED_RUNS not in _row(sessions, job.job_id).payload  # a new request starts from none


# ------------------------------------------------------------------------------------------------- the races


def _in_thread(action) -> tuple[threading.Thread, list]:
    out: list = []

    def run() -> None:
        try:
            out.append(action())
        except BaseException as error:  # reported by the test
            out.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


@pytest.mark.parametrize("first", ["notification", "end of run"])
def test_notification_racing_the_end_of_the_run_is_never_lost(sessions, first):
    """The receiver's transaction and the worker's ``done`` overlap, each holding the row while the other asks
    for it: whichever commits first, the job ends ``queued`` for exactly one more run."""
    job, _ = _request(sessions)
    run = _claim(sessions, job.job_id)
    holder = sessions()
    holder.begin()
    if first == "notification":
        request_run(holder, "fetch_subscription", PAYLOAD, KEY, queue="http", now=T0)
        thread, out = _in_thread(lambda: _end(sessions, run))
    else:
        assert jobs.done(holder, run, now=T0) == jobs.Outcome(jobs.DONE)
        thread, out = _in_thread(lambda: _request(sessions)[0].state)
    thread.join(0.5)  # the other transaction waits for the row (or has not reached it yet)
    holder.commit()
    holder.close()
    thread.join(60)
    assert not thread.is_alive() and not isinstance(out[0], BaseException), out
    row = _row(sessions, job.job_id)
    assert (row.state, row.generation, row.rerun) == (jobs.QUEUED, 2, False)
    assert row.max_attempts == row.attempts + jobs.MAX_ATTEMPTS


def _end(sessions, run) -> jobs.Outcome | None:
    with sessions() as session, session.begin():
        return jobs.done(session, run, now=T0)


def test_concurrent_first_notifications_make_one_job(sessions):
    threads = [_in_thread(lambda: _request(sessions)[0].job_id) for _ in range(4)]
    for thread, _out in threads:
        thread.join(60)
    ids = {out[0] for _thread, out in threads}
    assert len(ids) == 1 and all(isinstance(i, str) for i in ids), ids
    (row,) = _all(sessions)
    assert row.state == jobs.QUEUED
