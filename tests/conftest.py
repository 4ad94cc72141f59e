import os

# No GPU in CI: Triton kernels run on the CPU through the interpreter. Must be set before triton loads.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Served tokens and log-probabilities are compared with ReferenceEngine's float32 arithmetic.
os.environ.setdefault("MOSAIC_WORKER_DTYPE", "float32")

import pytest
from django.conf import settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

# Property tests judge results, not speed: on a shared 2-core machine (or a busy CI runner) drawing inputs can take
# over a second, which Hypothesis would otherwise report as a failure (too_slow, or a missed per-example deadline).
hypothesis_settings.register_profile("mosaic", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("mosaic")


@pytest.fixture(autouse=True)
def isolated_storage(settings, tmp_path):
    """Every test writes experts and models under its own temporary directory."""
    settings.EXPERT_STORAGE_DIR = tmp_path / "experts"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.LEDGER_SIGNING_KEY_FILE = str(tmp_path / "ledger_signing_key")
    yield


@pytest.fixture(autouse=True)
def celery_eager():
    from mosaic.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield


def is_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def redis_is_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not redis_is_reachable(), reason="Redis is not reachable at 127.0.0.1:6379")
