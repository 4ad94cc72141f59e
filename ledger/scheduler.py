"""Checkpoints on their own in the embedded default: with no broker there is no Celery beat, so the development
server signs one every LEDGER_CHECKPOINT_INTERVAL_SECONDS from a daemon thread (create_checkpoint signs nothing
when no entry was added), after integrating any event still queued (the after-commit sequencing leaves some when
its time budget runs out and no request follows). With a broker, beat's `ledger-checkpoint` and `ledger-sequence`
entries do the same."""
import logging
import sys
import threading

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)
_started = threading.Event()


def checkpoint_loop(*, interval: float, stop: threading.Event) -> None:
    from ledger.services import create_checkpoint, sequence_pending

    while not stop.wait(interval):
        try:
            sequence_pending(wait=False, sign=False)  # another sequencer leading integrates them itself
            create_checkpoint()
        except Exception:  # a failed signing is retried at the next tick; it must not end the loop
            logger.exception("in-process checkpoint failed")
        finally:
            connection.close()


def start_in_process_checkpoints(*, argv=None, environ=None) -> threading.Thread | None:
    """Start the loop once, in the process that serves `manage.py runserver` (the autoreloader's child, or the
    only process with --noreload), when tasks run eagerly (no broker, so no beat)."""
    import os

    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    serving = len(argv) > 1 and argv[1] == "runserver" and (environ.get("RUN_MAIN") == "true" or "--noreload" in argv)
    interval = settings.LEDGER_CHECKPOINT_INTERVAL_SECONDS
    if not (serving and settings.CELERY_TASK_ALWAYS_EAGER and interval > 0) or _started.is_set():
        return None
    _started.set()
    stop = threading.Event()
    thread = threading.Thread(target=checkpoint_loop, kwargs={"interval": interval, "stop": stop},
                              name="ledger-checkpoints", daemon=True)
    thread.stop = stop
    thread.start()
    return thread
