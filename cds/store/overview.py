"""The store at a glance for the landing page (issue 14 item 1): grants by status, jobs not done by state.

Two ``GROUP BY`` queries and nothing else, cheap enough for a public page: the job count skips ``done`` rows (the
bulk of the table once it has run a while) through the ``(state, run_after)`` index. Statuses are as stored
(WG1-02 §8.2); a grant whose ``expires`` passed still counts under its stored status until something closes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cds.store.jobs import DEAD, DEFERRED, FAILED, QUEUED, RUNNING
from cds.store.models import Grant, Job

#: Jobs still to do or needing an operator, in the order a reader cares about: waiting, running, parked, given up.
OPEN_JOB_STATES = (QUEUED, FAILED, DEFERRED, RUNNING, DEAD)


@dataclass(frozen=True)
class StoreOverview:
    grants: dict[str, int]  # status → count, only statuses that occur
    jobs: dict[str, int]  # state → count for OPEN_JOB_STATES (zeros kept: "0 waiting" is news too)

    @property
    def jobs_waiting(self) -> int:
        """Jobs that will run without anyone's help: queued, failed (retried at their time), deferred (202)."""
        return self.jobs[QUEUED] + self.jobs[FAILED] + self.jobs[DEFERRED]


def store_overview(session: Session) -> StoreOverview:
    grants = dict(session.execute(select(Grant.status, func.count()).group_by(Grant.status)).all())
    counted = dict(session.execute(select(Job.state, func.count()).where(Job.state.in_(OPEN_JOB_STATES))
                                   .group_by(Job.state)).all())
    return StoreOverview(grants=dict(sorted(grants.items())), jobs={state: counted.get(state, 0)
                                                                    for state in OPEN_JOB_STATES})
