"""The GPU workers' own Celery app: it never boots Django and never touches the database.

    MOSAIC_WORKER_BASE_MODEL_PATH=/models/base CELERY_BROKER_URL=redis://host:6379/0 \
        celery -A gpu_workers.app worker -Q base.<name> -P threads -c 64

It speaks the web side's settings (JSON only, late acknowledgement, one message prefetched) and registers
gpu_workers.tasks.run_completion under contract.TASK_NAME.
"""
from __future__ import annotations

import os

from celery import Celery

broker_url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("mosaic-gpu-workers", broker=broker_url,
             backend=os.environ.get("CELERY_RESULT_BACKEND", broker_url))
app.conf.update(
    task_serializer="json", result_serializer="json", accept_content=["json"],
    task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT_SECONDS", "90"))},
)
app.conf.imports = ["gpu_workers.tasks"]
