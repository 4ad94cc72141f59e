"""The processes of a real deployment, as a Procfile (run by honcho: `make up`).

- web: gunicorn;
- worker-<base model>: one Celery worker per registered base model, consuming its queue `base.<name>` with the
  model loaded (threads pool: concurrent requests share batches), its metrics on its own port;
- background: a Celery worker for everything else: the ledger's checkpoints, credit allocation and period
  close, Stripe usage reports, expert validation, system evaluations;
- beat: the schedule of those (settings.CELERY_BEAT_SCHEDULE);
- sequencer: integrates the events that every process records into the ledger, in batches (`ledger sequence
  --follow`; a second sequencer only waits, so this one is the leader unless it dies);
- witness: the demo's ledger witness, cosigning each new checkpoint (a real witness runs elsewhere).

PostgreSQL and Redis are not started here: DATABASE_URL and CELERY_BROKER_URL name them.
"""
from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkerSpec:
    base_model: str
    path: str
    metrics_port: int


def process_name(base_model: str) -> str:
    return "worker-" + re.sub(r"[^A-Za-z0-9_-]+", "-", base_model).strip("-").lower()


def worker_specs(base_models: list[tuple[str, str]], *, first_metrics_port: int) -> list[WorkerSpec]:
    """One worker per (name, local path) of the registered base models, in name order."""
    return [WorkerSpec(name, path, first_metrics_port + offset)
            for offset, (name, path) in enumerate(sorted(base_models))]


def procfile(workers: list[WorkerSpec], *, var_dir: Path, witness_dir: Path, python: str = sys.executable) -> str:
    manage_py = Path(__file__).resolve().parent.parent / "manage.py"
    py = shlex.quote(python)
    celery = f"{py} -m celery -A mosaic"
    lines = [
        "# Every process of this Mosaic deployment; written by `manage.py procfile` (run `make up`).",
        f"web: {py} -m gunicorn mosaic.wsgi:application --bind ${{MOSAIC_BIND:-127.0.0.1:8000}}"
        " --workers ${WEB_CONCURRENCY:-1} --threads ${WEB_THREADS:-16} --timeout ${WEB_TIMEOUT:-120}",
    ]
    for worker in workers:
        lines.append(
            f"{process_name(worker.base_model)}: MOSAIC_WORKER_BASE_MODEL_PATH={shlex.quote(worker.path)}"
            f" MOSAIC_WORKER_METRICS_PORT={worker.metrics_port} {celery} worker"
            f" -Q {shlex.quote('base.' + worker.base_model)} -n {shlex.quote(process_name(worker.base_model))}@%h"
            " -P threads -c ${WORKER_CONCURRENCY:-16} --without-gossip --without-mingle"
        )
    lines += [
        f"background: {celery} worker -Q celery -n background@%h -P threads -c ${{BACKGROUND_CONCURRENCY:-4}}"
        " --without-gossip --without-mingle",
        f"beat: {celery} beat --schedule {shlex.quote(str(var_dir / 'celerybeat-schedule'))}",
        f"sequencer: {py} {shlex.quote(str(manage_py))} ledger sequence --follow",
        f"witness: sh -c 'while true; do {py} {shlex.quote(str(manage_py))} ledger witness --store {shlex.quote(str(witness_dir))};"
        " sleep ${LEDGER_WITNESS_INTERVAL_SECONDS:-300}; done'",
    ]
    return "\n".join(lines) + "\n"
