"""bench.drills reads schemathesis' ndjson event stream: a change in its format must not read as "no failures"."""
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
