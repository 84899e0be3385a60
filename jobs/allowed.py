"""Only this project's job functions run: Redis is data, never code.

Anyone who can write to Redis (a shared `REDIS_URL`, a local user on the socket) can put a
job hash naming any importable function, say `os.system`, on our queue; RQ's own `Job`
would import and call it in the worker. `AllowedJob` is the job class our workers use:
a job whose function is not one of ours, that names a method of a stored instance, or that
carries callbacks is refused before anything of it is imported. RQ imports a job's function
and callbacks only through these properties (`Job.func`, `Job.*_callback`), so no other
path reaches `import_attribute`.
"""

from __future__ import annotations

from typing import Any

from rq.job import Job

from jobs.enqueue import PLAYLIST_FUNC, TRACK_FUNC
from jobs.errors import RefusedJob
from jobs.rq_compat import callback_names

ALLOWED_FUNCTIONS = frozenset({TRACK_FUNC, PLAYLIST_FUNC})


def refusal(job: Job) -> RefusedJob | None:
    """Why `job` must not run, or None when it is one of ours."""
    name = job.func_name
    if name not in ALLOWED_FUNCTIONS or job.instance is not None:
        return RefusedJob(str(name))
    for callback in callback_names(job):  # we never set callbacks
        return RefusedJob(f"{name} with callback {callback}")
    return None


class AllowedJob(Job):
    returned: Any = None  # what `perform` returned, so the worker need not read it back from Redis

    def perform(self) -> Any:
        self.returned = super().perform()
        return self.returned

    @property
    def func(self) -> Any:
        refused = refusal(self)
        if refused is not None:
            raise refused
        return super().func

    # A refused job still fails through RQ's failure path, which would import its failure
    # callback; none of our jobs has callbacks, so none is ever imported.
    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None
