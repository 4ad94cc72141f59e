"""domain.errors is the bottom of the import graph: every app raises its refusals, and it imports no app,
no Django and no torch."""
import subprocess
import sys

from domain.errors import Conflict, DomainError, Forbidden, NotFound


def test_importing_the_domain_errors_loads_no_app_no_django_and_no_torch():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, domain.errors; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert not [m for m in loaded if m.split(".")[0] in ("django", "rest_framework", "torch", "mosaic", "marketplace",
                                                         "ledger", "composition", "gpu_workers")]


def test_each_refusal_names_its_status_and_code_and_a_caller_may_override_them():
    assert [(e.status_code, e.code) for e in (DomainError, NotFound, Forbidden, Conflict)] == [
        (400, "invalid_request"), (404, "not_found"), (403, "forbidden"), (409, "conflict")]
    error = DomainError("Wrong user name or password.", code="authentication_failed", status_code=401, param="name")
    assert (error.message, error.code, error.status_code, error.param) == (
        "Wrong user name or password.", "authentication_failed", 401, "name")
