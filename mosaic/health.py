"""/healthz: the process is alive. /readyz: the database, the broker and the workers answer (mosaic.readiness);
503 naming what is missing otherwise. Neither needs authentication; neither says more than what is up."""
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from mosaic.readiness import readiness


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "alive"})


@never_cache
@require_GET
def readyz(request):
    ready, checks = readiness()
    body = {
        "status": "ready" if ready else "not ready",
        "checks": {check.name: {"ok": check.ok, "detail": check.detail} for check in checks},
    }
    workers = next(check for check in checks if check.name == "workers").facts.get("serving")
    if workers is not None:
        body["checks"]["workers"]["serving"] = workers
    if not ready:
        body["missing"] = [check.name for check in checks if not check.ok]
    return JsonResponse(body, status=200 if ready else 503)
