"""What a worker process reports about itself: its loaded base models and adapter pools (for Celery's inspect,
see mosaic.celery), and their Prometheus metrics. Reads the engines this process has loaded; never loads one."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


def loaded_engines() -> dict:
    """{resolved base model path: engine} of this process; {} when torch and the engine were never imported."""
    engine_module = sys.modules.get("gpu_workers.engine")
    if engine_module is None:
        return {}
    with engine_module._ENGINES_LOCK:
        return dict(engine_module._ENGINES)


def worker_state(queues: list[str]) -> dict:
    """The base model this worker holds (MOSAIC_WORKER_BASE_MODEL_PATH), whether it is loaded, its adapter pool
    and the queues it consumes."""
    expected = os.environ.get("MOSAIC_WORKER_BASE_MODEL_PATH")
    engines = loaded_engines()
    pools = {}
    for path, engine in engines.items():
        stats = engine.pool.stats
        pools[path] = {"resident": list(engine.pool.resident), "known": len(engine.pool.known),
                       "hits": stats.hits, "misses": stats.misses, "evictions": stats.evictions,
                       "loads": stats.loads}
    return {
        "base_model_path": expected,
        "base_model_loaded": expected is not None and str(Path(expected).resolve()) in engines,
        "adapter_pools": pools,
        "queues": sorted(queues),
    }


class AdapterPoolCollector:
    """Adapter pool hits, misses, evictions, loads and resident adapters, per base model, at scrape time."""

    def collect(self):
        counters = {name: CounterMetricFamily(f"mosaic_adapter_pool_{name}", f"Adapter pool {name}.",
                                              labels=["base_model"])
                    for name in ("hits", "misses", "evictions", "loads")}
        resident = GaugeMetricFamily("mosaic_adapter_pool_resident_adapters",
                                     "Adapters resident in the pool on the device.", labels=["base_model"])
        for path, engine in loaded_engines().items():
            label = [Path(path).name]
            for name, family in counters.items():
                family.add_metric(label, getattr(engine.pool.stats, name))
            resident.add_metric(label, len(engine.pool.resident))
        yield from counters.values()
        yield resident
