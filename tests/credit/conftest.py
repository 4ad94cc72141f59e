from dataclasses import dataclass

import pytest

from tests.credit.factories import (
    ComposedSystemFactory,
    ContributionMeasurementFactory,
    ContributorFactory,
    ExpertFactory,
    OrganizationFactory,
    SystemExpertFactory,
)


@dataclass
class World:
    organization: object
    system: object
    contributors: list
    experts: list


@pytest.fixture
def world(db):
    """A system of four experts: alice owns two, bob and charlie one each; measured shares 40/30/20/10%."""
    alice, bob, charlie = (ContributorFactory(user__username=name) for name in ("alice", "bob", "charlie"))
    system = ComposedSystemFactory(attribution_alpha_bp=5000)
    owners = [alice, alice, bob, charlie]
    experts = [ExpertFactory(owner=owner) for owner in owners]
    for position, (expert, share) in enumerate(zip(experts, (4000, 3000, 2000, 1000))):
        SystemExpertFactory(system=system, expert=expert, position=position)
        ContributionMeasurementFactory(system=system, expert=expert, share_bp=share)
    return World(
        organization=OrganizationFactory(), system=system, contributors=[alice, bob, charlie], experts=experts
    )


def usage_on(day, **fields):
    """A usage row served on `day` (noon UTC, or now if that is still to come: allocation takes only the past)."""
    from datetime import datetime, time, timezone as dt_timezone

    from django.utils import timezone

    from marketplace.models import Usage
    from tests.credit.factories import UsageFactory

    usage = UsageFactory(**fields)
    served = min(datetime.combine(day, time(12), tzinfo=dt_timezone.utc), timezone.now())
    Usage.objects.filter(pk=usage.pk).update(created_at=served)
    usage.refresh_from_db()
    return usage


def signed_webhook(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send for `payload`."""
    import hashlib
    import hmac
    import time as time_module

    timestamp = int(time_module.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class RecordingStripe:
    """A tiny local HTTP server standing in for api.stripe.com (localstripe has no Connect, disputes or credit notes):
    it records every request the stripe SDK sends and answers with canned Stripe objects (for a GET, the object
    stored under its path in `objects`)."""

    def __init__(self):
        import itertools
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qsl

        self.requests: list[dict] = []
        self.failures: list[tuple[int, dict]] = []  # (status, error body) answered first, in order
        self.objects: dict[str, dict] = {}  # GET path -> the object answered
        counter = itertools.count(1)
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                recorder.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
                found = recorder.objects.get(self.path.split("?")[0])
                status, answer = (200, found) if found is not None else (
                    404, {"error": {"message": f"No such object: {self.path}", "type": "invalid_request_error"}})
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                recorder.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "form": dict(parse_qsl(body)), "raw": body}
                )
                if recorder.failures:
                    status, answer = recorder.failures.pop(0)
                else:
                    status, answer = 200, recorder.answer(self.path, dict(parse_qsl(body)), next(counter))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", f"req_{len(recorder.requests)}")
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @staticmethod
    def answer(path: str, form: dict, n: int) -> dict:
        if path == "/v1/transfers":
            return {"id": f"tr_{n}", "object": "transfer", "amount": int(form["amount"]), "currency": form["currency"],
                    "destination": form["destination"], "metadata": {"payout_id": form.get("metadata[payout_id]")}}
        if path == "/v1/accounts":
            return {"id": f"acct_{n}", "object": "account", "type": "express", "payouts_enabled": False}
        if path == "/v1/account_links":
            return {"object": "account_link", "url": f"https://connect.stripe.com/setup/e/{form['account']}/{n}",
                    "expires_at": 1_900_000_000, "created": 1_800_000_000}
        return {"error": {"message": f"unknown path {path}", "type": "invalid_request_error"}}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stripe_server(settings):
    server = RecordingStripe()
    settings.STRIPE_API_BASE = server.url
    settings.STRIPE_API_KEY = "sk_test_credit"
    yield server
    server.close()
