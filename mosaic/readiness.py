"""Is this deployment ready to serve? The database, the broker, and a worker for each active base model, each
asked within READINESS_TIMEOUT_SECONDS. Also what /metrics reads at scrape time (queue depths, ledger state).

Embedded (Celery eager, no broker): inference runs in the web process, so the broker and the workers are
"embedded" and ready. With a broker, workers answer Celery's `mosaic_state` inspect command (mosaic.celery):
the base model they hold, whether it is loaded, their adapter pool and the queues they consume.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from mosaic.celery import app


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    facts: dict = field(default_factory=dict)


def embedded() -> bool:
    return bool(app.conf.task_always_eager)


def bound_s() -> float:
    return float(settings.READINESS_TIMEOUT_SECONDS)


def check_database() -> Check:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"SET LOCAL statement_timeout = {int(bound_s() * 1000)}")
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # noqa: BLE001 - any failure means not ready; say which
        return Check("database", False, f"the database did not answer: {type(error).__name__}: {error}")
    return Check("database", True, connection.vendor)


def _broker_connection():
    connection_ = app.connection_for_write()
    connection_.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=bound_s())
    return connection_


def check_broker() -> Check:
    if embedded():
        return Check("broker", True, "embedded: tasks run in this process")
    try:
        with _broker_connection() as broker:
            broker.default_channel  # noqa: B018 - opens a channel: the broker really answers
    except Exception as error:  # noqa: BLE001
        return Check("broker", False, f"the broker at {app.conf.broker_url.split('@')[-1]} did not answer: "
                                      f"{type(error).__name__}: {error}")
    return Check("broker", True, app.conf.broker_url.split("@")[-1])


def active_base_model_names() -> list[str]:
    """Base models that at least one active system runs on: each needs a worker."""
    from marketplace.models import ComposedSystem

    return sorted(set(ComposedSystem.objects.filter(status=ComposedSystem.Status.ACTIVE)
                      .values_list("base_model__name", flat=True)))


def worker_states() -> dict[str, dict]:
    """{worker hostname: its mosaic_state reply}, from the workers that answer within the bound."""
    replies = app.control.broadcast("mosaic_state", reply=True, timeout=bound_s()) or []
    return {hostname: state for reply in replies for hostname, state in reply.items() if isinstance(state, dict)}


def check_workers(base_models: list[str]) -> Check:
    if embedded():
        return Check("workers", True, "embedded: inference runs in this process")
    if not base_models:
        return Check("workers", True, "no active system: no worker is needed", {"serving": {}})
    try:
        states = worker_states()
    except Exception as error:  # noqa: BLE001
        return Check("workers", False, f"the workers could not be asked: {type(error).__name__}: {error}")
    serving = {name: sorted(host for host, state in states.items()
                            if f"base.{name}" in state.get("queues", []) and state.get("base_model_loaded"))
               for name in base_models}
    missing = [name for name, hosts in serving.items() if not hosts]
    facts = {"serving": serving, "workers": states}
    if missing:
        return Check("workers", False, "no worker with the base model loaded answered within "
                                       f"{bound_s():g} s for: {', '.join(missing)}", facts)
    return Check("workers", True, f"{len(states)} worker(s) answered", facts)


def readiness() -> tuple[bool, list[Check]]:
    checks = [check_database(), check_broker()]
    if not checks[0].ok:
        checks.append(Check("workers", False, "unknown: the active base models are read from the database"))
    elif not checks[1].ok:
        checks.append(Check("workers", False, "unknown: the broker did not answer"))
    else:
        try:
            base_models = active_base_model_names()
        except Exception as error:  # noqa: BLE001 - e.g. a database not migrated yet
            checks.append(Check("workers", False, f"the active base models could not be read: {error}"))
        else:
            checks.append(check_workers(base_models))
    return all(check.ok for check in checks), checks


def queue_depths() -> dict[str, int]:
    """Messages waiting in each registered base model's queue; {} when embedded."""
    from marketplace.models import BaseModel

    if embedded():
        return {}
    names = sorted(BaseModel.objects.values_list("name", flat=True))
    depths = {}
    with _broker_connection() as broker:
        channel = broker.default_channel
        for name in names:
            try:
                depths[name] = channel.queue_declare(queue=f"base.{name}", passive=True).message_count
            except Exception:  # noqa: BLE001 - a queue nobody declared yet holds nothing
                depths[name] = 0
    return depths


def ledger_state() -> dict:
    """The ledger's progress: entries appended; committed events the sequencer has not integrated yet and the
    age of the oldest (its integration lag); entries no signed checkpoint covers yet and the age of the oldest;
    the latest checkpoint's age (None before the first)."""
    from ledger.models import Checkpoint, Entry, PendingEvent, UnsequencedEvent

    now = timezone.now()
    tail = Entry.objects.order_by("-sequence").values("sequence").first()
    entries = tail["sequence"] + 1 if tail else 0
    waiting = UnsequencedEvent.objects.count()
    oldest_waiting = PendingEvent.objects.filter(
        id=UnsequencedEvent.objects.order_by("event_id").values("event_id")[:1]).values_list("created_at", flat=True).first()
    checkpoint = Checkpoint.objects.order_by("-tree_size", "-id").values("tree_size", "created_at").first()
    covered = checkpoint["tree_size"] if checkpoint else 0
    oldest_uncovered = Entry.objects.filter(sequence=covered).values_list("created_at", flat=True).first()
    return {
        "entries": entries,
        "events_waiting": waiting,
        "integration_lag_seconds": max((now - oldest_waiting).total_seconds(), 0.0) if oldest_waiting else 0.0,
        "entries_after_checkpoint": max(entries - covered, 0),
        "checkpoint_lag_seconds": (now - oldest_uncovered).total_seconds() if oldest_uncovered else 0.0,
        "checkpoint_age_seconds": (now - checkpoint["created_at"]).total_seconds() if checkpoint else None,
    }
