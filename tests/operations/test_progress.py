"""Long commands show progress bars on stderr: on a terminal, or forced with --progress; nothing off a terminal,
with --no-progress or with verbosity 0 (so tests and logs stay clean)."""
import io
import os
import re
from datetime import date

import pytest
from django.core.management import call_command

from ledger.services import create_checkpoint, record_event
from mosaic.progress import QUIET, Bars, progress_to


@pytest.fixture
def ledger_of_twelve(db):
    for i in range(12):
        record_event(kind="usage.recorded", payload={"i": i}, actor="org:1")
    create_checkpoint()


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def final_counts(stderr: str, description: str) -> list[str]:
    """The "done/total" of the bars named `description` when full (tqdm redraws a bar with carriage returns,
    a full one maybe twice)."""
    return sorted(set(re.findall(rf"{re.escape(description)}: 100%\|[^|]*\| (\d+/\d+)", stderr)))


def test_a_terminal_gets_bars_and_anything_else_gets_none():
    leader, follower = os.openpty()
    with os.fdopen(leader, "rb", buffering=0), os.fdopen(follower, "w") as terminal:
        assert isinstance(progress_to(terminal), Bars)
        assert progress_to(terminal, verbosity=0) is QUIET
        assert progress_to(terminal, forced=False) is QUIET
    assert progress_to(io.StringIO()) is QUIET
    assert isinstance(progress_to(io.StringIO(), forced=True), Bars)


def test_a_bar_counts_what_it_was_told():
    stream = io.StringIO()
    progress = progress_to(stream, forced=True)
    assert list(progress.track(range(5), "squares", unit="square")) == [0, 1, 2, 3, 4]
    assert final_counts(stream.getvalue(), "squares") == ["5/5"]


def test_ledger_verify_shows_the_entries_it_verifies_when_forced(ledger_of_twelve):
    out, err = run("ledger", "verify", "--progress")
    assert out.startswith("OK: 12 entries")
    assert final_counts(err, "verifying entries") == ["12/12"]
    assert final_counts(err, "checking recorded events") == ["12/12"]


@pytest.mark.parametrize(("before", "after"), [([], []), ([], ["--no-progress"]), (["--verbosity", "0"], ["--progress"])],
                         ids=["not a terminal", "--no-progress", "verbosity 0"])
def test_ledger_verify_is_silent_on_stderr_otherwise(ledger_of_twelve, before, after):
    out, err = run("ledger", *before, "verify", *after)
    assert out.startswith("OK: 12 entries") and err == ""


def test_ledger_export_shows_the_entries_it_writes(ledger_of_twelve, tmp_path):
    out, err = run("ledger", "export", str(tmp_path / "bundle.tar.gz"), "--progress")
    assert final_counts(err, "exporting entries") == ["12/12"]
    assert run("ledger", "export", str(tmp_path / "again.tar.gz"))[1] == ""


def test_allocation_and_period_close_show_their_stages(world, settings):
    from tests.credit.conftest import usage_on

    settings.PAYOUT_MINIMUM_MINOR = 1
    alices, _, bobs, charlies = world.experts
    shaped = {str(alices.id): "0.5", str(bobs.id): "0.25", str(charlies.id): "0.25"}
    for day in (3, 4, 5):
        usage_on(date(2026, 10, day), organization=world.organization, system=world.system, charge_minor=1000,
                 attribution=shaped)
    out, err = run("allocate_credit", "--progress", "--batch-size", "2")
    assert out.startswith("allocated 3 usage records in 2 batches")
    assert final_counts(err, "allocating usage") == ["3/3"]

    usage_on(date(2026, 10, 6), organization=world.organization, system=world.system, charge_minor=1000,
             attribution=shaped)
    out, err = run("close_period", "--start", "2026-10-01", "--end", "2026-10-31", "--progress")
    assert "closed: 3 statements" in out
    assert final_counts(err, "allocating usage") == ["1/1"]
    assert final_counts(err, "statements") == ["3/3"]  # alice, bob and charlie earned


@pytest.mark.django_db(transaction=True)  # committed uploads, as seed_demo runs
def test_seeding_shows_each_step_and_each_experts_training(var_dir):
    from marketplace.demo import DEMO_CONTRIBUTORS, SEEDERS

    out, err = run("seed_demo", "--world", "toy", "--progress")
    assert final_counts(err, "seeding the demo") == [f"{len(SEEDERS)}/{len(SEEDERS)}"]
    for person in DEMO_CONTRIBUTORS:
        assert final_counts(err, f"{person.username}/{person.slug}") == ["2/2"]  # the toy recipe's two steps
    out, err = run("seed_demo", "--world", "toy", "--verbosity", "0")
    assert err == ""


# The credit fixtures (a system of four experts with measured shares) and the demo's var directory.
from tests.credit.conftest import world  # noqa: E402,F401
from tests.marketplace.catalog.test_demo import var_dir  # noqa: E402,F401
