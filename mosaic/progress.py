"""How far long work has come, reported in one way wherever it runs.

Work reports through a Progress, stage by stage:

    with progress.stage("statements", total=len(contributors), unit="contributor") as step:
        for contributor in contributors:
            ...
            step.update()

A command shows bars (tqdm, on its stderr) when stderr is a terminal or --progress forces them, and nothing
with --no-progress or verbosity 0, so that logs and tests stay clean (`add_progress_arguments`,
`command_progress`). A job started from the web reports the same calls onto its row
(marketplace.services.jobs.JobProgress). QUIET reports nothing: the default of work that nobody watches.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")


class QuietStage:
    """A stage that nobody watches: every report is dropped."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


class Progress:
    """Reports nothing; subclasses show or record the stages."""

    def stage(self, description: str, *, total: int | None = None, unit: str = "it"):
        """A context manager with .update(n=1) and .set_postfix(**values)."""
        return QuietStage()

    def track(self, items: Iterable[Item], description: str, *, total: int | None = None,
              unit: str = "it") -> Iterator[Item]:
        """The items, one stage step each (total: len(items) when it has one)."""
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        with self.stage(description, total=total, unit=unit) as step:
            for item in items:
                yield item
                step.update()


QUIET = Progress()


class Bars(Progress):
    """A tqdm bar per stage, written to `stream`."""

    def __init__(self, stream):
        self.stream = stream

    def stage(self, description: str, *, total: int | None = None, unit: str = "it"):
        from tqdm import tqdm

        return tqdm(total=total, desc=description, unit=unit, file=self.stream, dynamic_ncols=True, leave=True)


def progress_to(stream, *, verbosity: int = 1, forced: bool | None = None) -> Progress:
    """Bars on `stream` when forced, or when it is a terminal unless verbosity is 0 or bars are refused
    (forced=False)."""
    if forced is False or verbosity == 0:
        return QUIET
    if forced or (hasattr(stream, "isatty") and stream.isatty()):
        return Bars(stream)
    return QUIET


def add_progress_arguments(parser) -> None:
    """--progress / --no-progress on a command's parser (or one of its subcommands')."""
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--progress", dest="progress", action="store_true", default=None,
                        help="show progress bars on stderr even when it is not a terminal")
    choice.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars (as with --verbosity 0)")


def command_progress(command, options: dict) -> Progress:
    """The Progress of a management command run with `options` (its stderr, --verbosity, --progress)."""
    stream = getattr(command.stderr, "_out", command.stderr)  # Django's OutputWrapper adds line endings; tqdm must not get them
    return progress_to(stream, verbosity=options.get("verbosity", 1), forced=options.get("progress"))
