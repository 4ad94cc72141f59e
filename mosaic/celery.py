import os

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun, worker_init
from celery.worker.control import inspect_command

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mosaic.settings")

app = Celery("mosaic")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def use_django_logging(**_kwargs) -> None:
    """Workers and beat log as the web does (settings.LOGGING: JSON lines in production), not Celery's way."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@worker_init.connect
def start_worker_observability(**_kwargs) -> None:
    """Each task's log lines carry its request id; completions are counted; MOSAIC_WORKER_METRICS_PORT serves
    this worker's Prometheus metrics."""
    from mosaic import logs, metrics

    task_prerun.connect(logs.bind_task_request_id, weak=False)
    task_postrun.connect(metrics.observe_worker_task, weak=False)
    task_postrun.connect(logs.unbind_task_request_id, weak=False)
    metrics.start_worker_metrics_server()


@inspect_command()
def mosaic_state(state) -> dict:
    """`celery -A mosaic inspect mosaic_state`: the base model this worker holds, whether it is loaded, its
    adapter pool and its queues (what /readyz asks)."""
    from gpu_workers.observability import worker_state

    consumer = getattr(state, "consumer", None)
    task_consumer = getattr(consumer, "task_consumer", None)
    queues = [queue.name for queue in getattr(task_consumer, "queues", [])]
    return worker_state(queues)
