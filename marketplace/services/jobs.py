"""Job rows (marketplace.models.jobs.Job), for every kind of job: the one place that moves a job through its
states and records how far it has come.

A job is created queued by its own service (evaluation_request, period_close_request) and queued as a task
once that commits; the task calls `job_run`, which claims the row (queued -> running), runs the work with a
JobProgress, and ends the row as succeeded (with the work's result) or failed (with the error)."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

from django.utils import timezone

from marketplace.models.jobs import Job
from domain.errors import DomainError
from mosaic.progress import QUIET, Progress

AnyJob = TypeVar("AnyJob", bound=Job)

WRITE_INTERVAL_SECONDS = 0.5  # a stage's count is written at most this often (and at its end)


def _write(job: Job, **fields) -> None:
    type(job).objects.filter(pk=job.pk).update(**fields)
    for name, value in fields.items():
        setattr(job, name, value)


class JobStage:
    """One stage of a job: its name and count on the row, and the same reports passed on to `also`."""

    def __init__(self, job: Job, description: str, total: int | None, also):
        self.job, self.also, self.done, self.written_at = job, also, 0, time.monotonic()
        _write(job, stage=description[:200], progress_done=0, progress_total=total)

    def update(self, n: int = 1) -> None:
        self.done += n
        self.also.update(n)
        if time.monotonic() - self.written_at >= WRITE_INTERVAL_SECONDS:
            self._write_count()

    def set_postfix(self, **values) -> None:
        self.also.set_postfix(**values)

    def _write_count(self) -> None:
        _write(self.job, progress_done=self.done)
        self.written_at = time.monotonic()

    def __enter__(self):
        self.also.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._write_count()
        finally:
            self.also.__exit__(*exc)


class JobProgress(Progress):
    """Records each stage of the work on the job's row, and reports it to `also` too (a command's bars)."""

    def __init__(self, job: Job, *, also: Progress = QUIET):
        self.job, self.also = job, also

    def stage(self, description: str, *, total: int | None = None, unit: str = "it"):
        return JobStage(self.job, description, total, self.also.stage(description, total=total, unit=unit))


def job_run(*, model: type[AnyJob], job_id: int, work: Callable[[AnyJob, Progress], dict | None],
            also: Progress = QUIET) -> AnyJob:
    """Run the queued job `job_id`: `work(job, progress)` returns the job's result (or None).

    A job that is not queued any more (a redelivered task) is returned as it is. A DomainError ends the job as
    failed with its message; any other exception ends it as failed with its type and text, and is raised again
    so that the worker logs it."""
    claimed = model.objects.filter(pk=job_id, state=Job.State.QUEUED).update(
        state=Job.State.RUNNING, started_at=timezone.now())
    job = model.objects.get(pk=job_id)
    if not claimed:
        return job
    try:
        result = work(job, JobProgress(job, also=also))
    except DomainError as error:
        _write(job, state=Job.State.FAILED, error=error.message, finished_at=timezone.now())
    except Exception as error:
        _write(job, state=Job.State.FAILED, error=f"{type(error).__name__}: {error}", finished_at=timezone.now())
        raise
    else:
        _write(job, state=Job.State.SUCCEEDED, finished_at=timezone.now(),
               **({"result": result} if result is not None else {}))
    job.refresh_from_db()
    return job
