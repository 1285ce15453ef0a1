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
