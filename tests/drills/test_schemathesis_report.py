"""bench.drills reads schemathesis' ndjson event stream: a change in its format must not read as "no failures"; a run
that tested nothing (a machine too busy for its time budget) runs once more before the drill says so."""
import json

from bench.drills import read_schemathesis_events


def scenario(label: str, checks: list[dict], status_code: int) -> dict:
    """One ScenarioFinished event as schemathesis 4.32 writes it (trimmed to the fields the drills read)."""
    return {"ScenarioFinished": {"phase": "fuzzing", "status": "failure", "recorder": {
        "label": label,
        "cases": {"case1": {"value": {"method": label.split()[0], "path": label.split()[1]}}},
        "checks": {"case1": checks},
        "interactions": {"case1": {"response": {"status_code": status_code, "elapsed": 0.01}}},
    }}}


def test_counts_failed_checks_per_operation_and_5xx_responses(tmp_path):
    events = [
        {"Initialize": {}},
        scenario("GET /api/organizations", [
            {"name": "not_a_server_error", "status": "success"},
            {"name": "response_schema_conformance", "status": "failure", "failure_info": {"failure": {
                "title": "Response violates schema", "message": "[] is not of type 'object'"}}},
        ], 200),
        scenario("POST /v1/completions", [
            {"name": "not_a_server_error", "status": "failure", "failure_info": {"failure": {
                "title": "Server error", "message": "Received: 500"}}},
        ], 500),
        scenario("GET /v1/models", [{"name": "not_a_server_error", "status": "success"}], 200),
    ]
    (tmp_path / "ndjson-1.ndjson").write_text("\n".join(json.dumps(e) for e in events) + "\n")

    report = read_schemathesis_events(tmp_path)

    assert report["operations_tested"] == 3
    assert report["test_cases"] == 3
    assert report["responses_5xx"] == 1
    assert report["failures"] == {"not_a_server_error": 1, "response_schema_conformance": 1}
    assert report["failing_operations"]["not_a_server_error"] == ["POST /v1/completions"]
    assert any("is not of type" in sample for sample in report["samples"])


def test_an_empty_report_tests_nothing(tmp_path):
    assert read_schemathesis_events(tmp_path)["operations_tested"] == 0


def test_a_run_that_tested_nothing_runs_once_more_with_twice_the_time(monkeypatch):
    from types import SimpleNamespace

    from bench import drills

    calls = []

    def fake_run(stack, *, pattern, header, seconds, phases, seed):
        calls.append((pattern, seconds))
        tested = 0 if (pattern, seconds) == ("^/v1/", 8) else 4
        return {"operations_tested": tested, "test_cases": 3 * tested, "exit_code": 0, "failures": {},
                "responses_5xx": 0}

    monkeypatch.setattr(drills, "run_schemathesis", fake_run)
    stack = SimpleNamespace(key="key", user_token="token")
    args = SimpleNamespace(schemathesis_seconds=20, schemathesis_phases="fuzzing", seed=1)

    result = drills.drill_schemathesis(stack, args)

    assert calls == [("^/v1/", 8), ("^/v1/", 16), ("^/api/", 12)]
    assert result["runs"]["/v1"]["retried_after_testing_nothing_in_s"] == 8
    assert all(check["ok"] for check in result["checks"])
