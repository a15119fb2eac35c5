"""Worker threads that end cleanly whenever napari, a dock or Python closes.

Why Python used to abort on close ("RuntimeError: wrapped C/C++ object of type
WorkerBaseSignals has been deleted", then "Fatal Python error: Aborted", exit code 134):
napari's workers (superqt's) are ``QRunnable`` objects whose signals live on a separate
``WorkerBaseSignals`` QObject owned by Python. When the interpreter exits while a worker
thread still runs (the viewer was closed by a script, a test or an embedding application
that then ends without ``napari.run()``), PyQt's exit handler destroys every Python-owned
Qt object, those signal objects included. The worker's next ``emit`` (progress,
``returned``, ``finished``) raises that RuntimeError inside ``QRunnable.run``, and PyQt turns
an exception escaping a C++ virtual into ``qFatal``: abort. napari's own guard
(``wait_for_workers_to_quit`` on ``aboutToQuit``) only runs when napari's event loop ends,
and a plain function worker (brain mask, model loading) ignores ``quit()`` anyway.

So every worker of the plugin is made here (:func:`new_worker`):

- an ``atexit`` handler, registered after PyQt's own (atexit runs last-registered first,
  so it runs before PyQt destroys anything), asks every worker to stop and waits for the
  thread pool (at most :data:`EXIT_WAIT_S`);
- a worker's ``run`` never lets an exception out (one escaping would abort Python);
- a function worker asked to stop before its thread picked it up does not run at all.
"""

from __future__ import annotations

import atexit
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from napari.qt.threading import FunctionWorker, GeneratorWorker, WorkerBase, create_worker
from qtpy.QtCore import QThreadPool

EXIT_WAIT_S = 120.0
"""How long Python's exit waits for running workers (a brain mask or a model import cannot
be interrupted; generator jobs stop at their next progress report)."""


def is_deleted_error(error: BaseException) -> bool:
    """Whether ``error`` says a Qt object was already deleted (the widget or worker is gone)."""
    return isinstance(error, RuntimeError) and "has been deleted" in str(error)


def viewer_closed(widget: Any) -> bool:
    """Whether ``widget`` (or the widget above it that holds the dock's ``viewer``) is gone or
    its napari viewer was closed: a result arriving then must not touch either (napari
    cannot add layers to a closed viewer, and an exception in a Qt slot aborts a script)."""
    try:
        while widget is not None:
            viewer = getattr(widget, "viewer", None)
            if viewer is not None:
                window = getattr(viewer, "window", None)
                return window is not None and not hasattr(window, "_qt_window")  # napari's close drops it
            widget = widget.parent()
    except RuntimeError as error:  # a deleted Qt object on the way up
        if is_deleted_error(error):
            return True
        raise
    return False


class _EndsQuietly:
    """Mixin for napari workers: nothing escapes ``run`` (PyQt would abort Python)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # emitting failed: the signals object is gone (exit)
            if not is_deleted_error(error):
                traceback.print_exception(error, file=sys.stderr)


class PluginGeneratorWorker(_EndsQuietly, GeneratorWorker):
    """napari's generator worker that never aborts Python (see the module docstring)."""


class PluginFunctionWorker(_EndsQuietly, FunctionWorker):
    """napari's function worker that never aborts Python and skips its function when it
    was asked to stop before it started (e.g. queued behind other workers at exit)."""

    def work(self) -> Any:
        if self.abort_requested:
            return None  # run() emits no ``returned`` for a worker asked to stop
        return super().work()


def new_worker(function: Callable[..., Any], *args: Any) -> GeneratorWorker | FunctionWorker:
    """An unstarted worker for ``function(*args)`` (a generator function gives a generator
    worker); errors go to its ``errored`` signal only."""
    import inspect

    worker_class = PluginGeneratorWorker if inspect.isgeneratorfunction(function) else PluginFunctionWorker
    return create_worker(function, *args, _start_thread=False, _ignore_errors=True, _worker_class=worker_class)


def stop_all_workers(timeout_s: float = EXIT_WAIT_S) -> bool:
    """Ask every napari worker to stop and wait up to ``timeout_s`` for the thread pool to be
    idle; True when it is. Says so on stderr when the wait takes more than a second."""
    for worker in list(WorkerBase._worker_set):
        worker.quit()
    pool = QThreadPool.globalInstance()
    started = time.perf_counter()
    if pool.waitForDone(1000):
        return True
    print(f"napari-mentalmap: waiting for {pool.activeThreadCount()} background job(s) to stop …",
          file=sys.stderr, flush=True)
    return pool.waitForDone(max(0, int(1000 * (timeout_s - (time.perf_counter() - started)))))


atexit.register(stop_all_workers)
