"""GPU workers run a Celery app of their own: it never boots Django, and it serves the contract's task name."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORKER_PROCESS = r"""
import json, sys
from gpu_workers.app import app
app.loader.import_default_modules()
from gpu_workers import contract
booted = "django.conf" in sys.modules and sys.modules["django.conf"].settings.configured
project = sorted(m for m in ("mosaic", "marketplace", "ledger") if m in sys.modules)
print(json.dumps({"django_booted": booted, "project": project, "torch": "torch" in sys.modules,
                  "task": contract.TASK_NAME in app.tasks, "serializer": app.conf.task_serializer}))
"""


def test_the_worker_app_registers_the_completion_task_without_django():
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "CELERY_BROKER_URL": "memory://"}
    ran = subprocess.run([sys.executable, "-c", WORKER_PROCESS], cwd=ROOT, env=environment, capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    # kombu imports django.utils.functional if it is installed; the worker never configures Django
    assert report == {"django_booted": False, "project": [], "torch": False, "task": True, "serializer": "json"}
