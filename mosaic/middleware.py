"""RequestContextMiddleware, first in MIDDLEWARE: gives each request its id (bound for every log line, sent back
as x-request-id, and the id of the completion it serves), writes one log line per request and counts it in
the Prometheus metrics."""
import logging
import time

from mosaic import logs, metrics

logger = logging.getLogger("mosaic.request")


def _bound(chunks, request_id: str):
    """The chunks, each produced with the request's id bound (and the source closed, with it bound, when the
    client goes away: a completion's stream records its usage then)."""
    iterator = iter(chunks)
    try:
        while True:
            with logs.request_id_bound(request_id):
                chunk = next(iterator, None)
            if chunk is None:
                return
            yield chunk
    finally:
        with logs.request_id_bound(request_id):
            getattr(iterator, "close", lambda: None)()


def route_of(request) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return match.route or match.view_name or "unmatched"


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = logs.new_request_id()
        request.request_id = request_id
        started = time.perf_counter()
        with logs.request_id_bound(request_id):
            response = self.get_response(request)
            seconds = time.perf_counter() - started
            route = route_of(request)
            metrics.observe_request(route=route, method=request.method, status=response.status_code, seconds=seconds)
            match = getattr(request, "resolver_match", None)
            metrics.observe_stripe_webhook(url_name=match.url_name if match else None, status=response.status_code,
                                           result=(getattr(response, "data", None) or {}).get("result")
                                           if isinstance(getattr(response, "data", None), dict) else None)
            if response.streaming:  # the body is produced after this returns: its lines keep the id too
                response.streaming_content = _bound(response.streaming_content, request_id)
            if not response.has_header("x-request-id"):
                response["x-request-id"] = request_id
            logger.info(
                "%s %s %s %.1f ms", request.method, request.path, response.status_code, seconds * 1000,
                extra={"method": request.method, "path": request.path, "route": route,
                       "status": response.status_code, "duration_ms": round(seconds * 1000, 1),
                       "served_request_id": response["x-request-id"]},
            )
        return response
