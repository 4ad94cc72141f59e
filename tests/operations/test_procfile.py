"""The Procfile of a deployment: a worker per registered base model (the make up test starts one)."""
import pytest
from django.core.management import CommandError, call_command

from mosaic.deployment import procfile, process_name, worker_specs
from tests.conftest import is_postgres

pytestmark = pytest.mark.django_db


def test_each_registered_base_model_gets_its_worker_queue_and_metrics_port(tmp_path):
    text = procfile(worker_specs([("qwen2.5-7b", "/models/qwen"), ("smollm2", "/models/my smollm")],
                                 first_metrics_port=9101),
                    var_dir=tmp_path, witness_dir=tmp_path / "witness", python="/venv/bin/python")
    names = [line.split(":", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    assert names == ["web", "worker-qwen2-5-7b", "worker-smollm2", "background", "beat", "sequencer", "witness"]
    qwen, smollm = (line for line in text.splitlines() if line.startswith("worker-"))
    assert "MOSAIC_WORKER_BASE_MODEL_PATH=/models/qwen MOSAIC_WORKER_METRICS_PORT=9101 " in qwen
    assert "-Q base.qwen2.5-7b -n worker-qwen2-5-7b@%h -P threads" in qwen
    assert "MOSAIC_WORKER_BASE_MODEL_PATH='/models/my smollm' MOSAIC_WORKER_METRICS_PORT=9102 " in smollm


def test_process_names_are_what_a_procfile_accepts():
    assert process_name("Org/Model_v1.5") == "worker-org-model_v1-5"


def test_the_command_refuses_the_in_memory_broker(settings):
    settings.CELERY_BROKER_URL = "memory://"
    with pytest.raises(CommandError, match="set CELERY_BROKER_URL"):
        call_command("procfile")


@pytest.mark.skipif(is_postgres(), reason="the embedded SQLite database only")
def test_the_command_refuses_the_embedded_sqlite_database(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/9"
    with pytest.raises(CommandError, match="set DATABASE_URL"):
        call_command("procfile")
