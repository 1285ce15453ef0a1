"""``greenbridge jobs``: summary, listing and retries over the gateway's store (no Redis: the rows alone)."""

from __future__ import annotations

import json

from gateway_helpers import make_config

from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from greenbridge.cli import main
from workers import jobs


def _store(tmp_path, monkeypatch, database_url):
    config = make_config(tmp_path, database_url)
    for name, value in {"GREENBRIDGE_DATABASE_URL": config.database_url, "GREENBRIDGE_SECRET_KEY": "k",
                        "GREENBRIDGE_DATA_DIR": str(tmp_path / "var")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GREENBRIDGE_REDIS_URL", raising=False)
    monkeypatch.delenv("GREENBRIDGE_CONFIG", raising=False)
    engine = make_engine(config.database_url)
    upgrade(engine)
    return engine, make_sessionmaker(engine)


def test_summary_list_and_retry(tmp_path, monkeypatch, capsys, database_url):
    engine, sessions = _store(tmp_path, monkeypatch, database_url)
    try:
        with sessions() as session, session.begin():
            done = jobs.enqueue(session, "fetch_subscription", {"uri": "u1"}, "a", queue="http")
            dead = jobs.enqueue(session, "fetch_bulk", {"uri": "u2"}, "b", queue="sftp", max_attempts=1)
            waiting = jobs.enqueue(session, "ingest_bulk_part", {}, "c")
            for job, outcome in ((done, "done"), (dead, "dead")):
                run = jobs.claim(session, job.job_id)
                assert (jobs.done(session, run) if outcome == "done" else jobs.dead(session, run, "host key changed"))
            ids = done.job_id, dead.job_id, waiting.job_id

        assert main(["jobs"]) == 0
        out = capsys.readouterr().out
        assert "fetch_bulk" in out and "host key changed" in out and f"oldest waiting: {ids[2]}" in out

        assert main(["jobs", "list", "--state", "dead", "--json"]) == 0
        (listed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert listed["job_id"] == ids[1] and listed["last_error"] == "host key changed"

        assert main(["jobs", "retry", ids[1]]) == 0
        assert f"{ids[1]}: queued" in capsys.readouterr().out
        with sessions() as session:
            again = jobs.get(session, ids[1])
        assert again.state == jobs.QUEUED and again.max_attempts == again.attempts + jobs.MAX_ATTEMPTS
        assert main(["jobs", "retry", ids[0], "nope"]) == 1  # done and unknown jobs are not retried
        assert "no dead or failed job" in capsys.readouterr().err
        with sessions() as session:
            assert jobs.get(session, ids[0]).state == jobs.DONE
    finally:
        engine.dispose()


def test_a_job_that_succeeded_with_a_warning_shows_it(tmp_path, monkeypatch, capsys, caplog, database_url):
    """A handler that could not do everything (workers.kinds.warn, e.g. bulk entries placed in no part) ends
    ``done`` with its result and warning kept on the row, a WARNING in the log, and both in ``greenbridge jobs``."""
    import logging

    from workers.kinds import HANDLERS, register, warn
    from workers.tasks import execute

    engine, sessions = _store(tmp_path, monkeypatch, database_url)

    @register("test_partial", queue="translate")
    def partial(session, job, config):
        warn(session, "3 entries (72 readings) placed in no part")
        warn(session, "1 subscription part(s) with no live authorization")
        return "2 part(s), 1 ingest job(s)"

    try:
        with sessions() as session, session.begin():
            job_id = jobs.enqueue(session, "test_partial", {}, "partial", queue="translate").job_id
            plain = jobs.enqueue(session, "fetch_subscription", {"uri": "u1"}, "plain", queue="http")
            assert jobs.done(session, jobs.claim(session, plain.job_id), result="stored")
        with caplog.at_level(logging.WARNING, logger="workers.tasks"):
            assert execute(make_config(tmp_path, database_url), job_id).state == jobs.DONE
        with sessions() as session:
            row = jobs.get(session, job_id)
            assert (row.state, row.result) == (jobs.DONE, "2 part(s), 1 ingest job(s)")
            assert row.warning == "3 entries (72 readings) placed in no part; 1 subscription part(s) with no live " \
                                  "authorization"
            assert jobs.get(session, plain.job_id).warning is None
        assert any("done with a warning" in r.getMessage() and "(72 readings)" in r.getMessage()
                   for r in caplog.records if r.levelno == logging.WARNING)

        assert main(["jobs"]) == 0
        out = capsys.readouterr().out
        assert "warnings (the job succeeded, but not everything was stored):" in out
        assert f"done {job_id} test_partial: 3 entries (72 readings) placed in no part" in out
        assert main(["jobs", "list", "--warnings", "--json"]) == 0
        (listed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert (listed["job_id"], listed["result"]) == (job_id, "2 part(s), 1 ingest job(s)")
        assert main(["jobs", "list"]) == 0
        assert "warning: 3 entries (72 readings)" in capsys.readouterr().out
    finally:
        HANDLERS.pop("test_partial", None)
        engine.dispose()
