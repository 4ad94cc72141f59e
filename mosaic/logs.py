"""Logs: each line carries the request id of the request (web) or task (worker) it belongs to.

The web side gives every request a fresh id (mosaic.middleware); a completion's id is its task's id and its
usage row's request_id, and the worker binds it while the task runs (bind_task_request_id, a Celery signal).
Production writes JSON lines (python-json-logger); the demo writes human-readable lines.
"""
from __future__ import annotations

import contextvars
import logging
import time
import uuid
from contextlib import contextmanager

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("mosaic_request_id", default=None)
task_logger = logging.getLogger("mosaic.tasks")


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return _request_id.get()


@contextmanager
def request_id_bound(request_id: str | None):
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record: the bound one, the id of the request the record names (Django logs a
    response's error status after the middleware has returned), or "-" outside a request or task."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            named = getattr(getattr(record, "request", None), "request_id", None)
            record.request_id = _request_id.get() or named or "-"
        return True


HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(request_id)s %(process)d %(message)s"


def logging_config(*, level: str, json_lines: bool, mosaic_level: str) -> dict:
    """The LOGGING setting: one console handler, JSON or human-readable; mosaic's own loggers at mosaic_level
    (the request and task lines are INFO)."""
    formatter = (
        {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": JSON_FIELDS,
         "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}}
        if json_lines else {"format": HUMAN_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "mosaic.logs.RequestIdFilter"}},
        "formatters": {"mosaic": formatter},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "mosaic", "filters": ["request_id"]}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"mosaic": {"level": mosaic_level}},
    }


def task_request_id(task_id: str | None, kwargs: dict | None) -> str | None:
    """A task's request id: its message's request_id (completions: also the task id), else the task id."""
    message = (kwargs or {}).get("message")
    if isinstance(message, dict) and isinstance(message.get("request_id"), str):
        return message["request_id"]
    return task_id


_bound_tasks: dict[str, tuple[contextvars.Token, float]] = {}


def bind_task_request_id(task_id=None, task=None, kwargs=None, **_):
    """celery task_prerun: bind the request id for the task's log lines, and log the start."""
    token = _request_id.set(task_request_id(task_id, kwargs))
    _bound_tasks[task_id] = (token, time.perf_counter())
    task_logger.info("task %s started", getattr(task, "name", task), extra={"task": getattr(task, "name", None)})


def unbind_task_request_id(task_id=None, task=None, state=None, retval=None, **_):
    """celery task_postrun: log the outcome (and a completion's tokens), then unbind the request id."""
    bound = _bound_tasks.pop(task_id, None)
    elapsed_ms = int((time.perf_counter() - bound[1]) * 1000) if bound else None
    extra = {"task": getattr(task, "name", None), "state": state, "duration_ms": elapsed_ms}
    if isinstance(retval, dict):
        if isinstance(retval.get("usage"), dict):
            extra.update(prompt_tokens=retval["usage"].get("prompt_tokens"),
                         completion_tokens=retval["usage"].get("completion_tokens"))
        if isinstance(retval.get("error"), dict):
            extra["error_code"] = retval["error"].get("code")
    task_logger.info("task %s finished: %s in %s ms", extra["task"], state, elapsed_ms, extra=extra)
    if bound:
        try:
            _request_id.reset(bound[0])
        except ValueError:  # set in another context (another thread of the pool): clear it there instead
            _request_id.set(None)
