"""The default base model is converted once, even when several processes ask for it at the same time."""
import threading
import time

from gpu_workers import model_import


def test_a_caller_that_waited_for_the_lock_uses_the_directory_converted_meanwhile(tmp_path, monkeypatch):
    conversions = []
    monkeypatch.setattr(model_import, "convert_gguf", lambda *args: conversions.append(args))
    out_dir = tmp_path / model_import.DEFAULT_BASE_MODEL_NAME
    answer = {}

    with model_import.conversion_lock(out_dir):  # another process is converting
        waiter = threading.Thread(target=lambda: answer.update(path=model_import.ensure_default_base_model(tmp_path)))
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive()  # it waits for the lock
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"")
    waiter.join(timeout=10)

    assert answer == {"path": out_dir}
    assert conversions == []


def test_a_converted_directory_is_reused_without_converting(tmp_path, monkeypatch):
    monkeypatch.setattr(model_import, "convert_gguf", lambda *args: (_ for _ in ()).throw(AssertionError("converted")))
    out_dir = tmp_path / model_import.DEFAULT_BASE_MODEL_NAME
    out_dir.mkdir()
    (out_dir / "config.json").write_text("{}")
    (out_dir / "model.safetensors").write_bytes(b"")

    assert model_import.ensure_default_base_model(tmp_path) == out_dir
