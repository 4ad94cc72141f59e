"""bench.serving's figures from the clients' timings (the run itself needs gunicorn, Redis and a worker process:
`python -m bench.serving --smoke` checks every code path in a couple of minutes)."""
import pytest

from bench.serving import summarise


def record(sent, chunks, end, tokens, error=None):
    return {"sent": sent, "chunk_times": chunks, "end": end, "tokens": tokens, "error": error, "max_tokens": tokens}


def test_the_figures_of_a_run():
    records = [
        [record(0.0, [1.0, 2.0, 4.0], 10.0, 3)],  # the long answer, from 0 to 10 s
        [record(2.0, [3.0, 3.5], 5.0, 2), record(5.0, [11.0, 11.5], 12.0, 2)],  # during it; the 2nd's token after
        [record(0.5, [6.0], 7.0, 1), record(11.0, [], 12.0, 0, error="HTTP 503")],  # before its first token; after
    ]

    row = summarise(records)

    assert row["requests"] == 5 and row["failed"] == 1
    assert row["tokens"] == 8 and row["wall_s"] == 12.0
    assert row["tokens_per_s"] == pytest.approx(8 / 12, abs=0.01)
    assert row["ttft_p50_s"] == 5.5 and row["ttft_p99_s"] == 6.0  # ttfts 1, 1, 5.5, 6
    assert row["itl_p99_s"] == 2.0  # gaps 1, 2, 0.5, 0.5
    assert (row["first_token_before_long_answer_ends"], row["arrived_during_long_answer"]) == (2, 3)
    assert not row["late_first_token_before_long_ends"]
    assert row["long_answer_s"] == 10.0


def test_a_request_sent_in_the_long_answers_last_moments_may_be_served_after_it():
    records = [
        [record(0.0, [1.0, 2.0], 10.0, 2)],  # the long answer, from 0 to 10 s
        [record(2.0, [3.0], 5.0, 1), record(9.6, [10.1], 11.0, 1)],  # the 2nd sent 0.4 s before its end
    ]

    row = summarise(records)

    assert (row["first_token_before_long_answer_ends"], row["arrived_during_long_answer"]) == (1, 2)
    assert row["served_after_the_long_answer_sent_s_before_its_end"] == [0.4]
    assert row["late_first_token_before_long_ends"]
