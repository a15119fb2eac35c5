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
import inspect
import sys
import time
import traceback
from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import FunctionWorker, GeneratorWorker, WorkerBase, create_worker
from qtpy.QtCore import Qt, QThreadPool
from qtpy.QtWidgets import QMainWindow

EXIT_WAIT_S = 120.0
"""How long Python's exit waits for running workers (a brain mask or a model import cannot
be interrupted; generator jobs stop at their next progress report)."""


def is_deleted_error(error: BaseException) -> bool:
    """Whether ``error`` says a Qt object was already deleted (the widget or worker is gone)."""
    return isinstance(error, RuntimeError) and "has been deleted" in str(error)


def viewer_closed(widget: Any) -> bool:
    """Whether ``widget`` was deleted, or the napari window it is docked in was closed (shown,
    then hidden: closing hides the main window, which Qt deletes a moment later). A result
    arriving then must not touch either: napari cannot add layers to a closed viewer, and
    an exception in a Qt slot aborts a script."""
    try:
        window = widget.window()
        return (isinstance(window, QMainWindow) and window.testAttribute(Qt.WidgetAttribute.WA_WState_ExplicitShowHide)
                and window.testAttribute(Qt.WidgetAttribute.WA_WState_Hidden))
    except RuntimeError as error:
        if is_deleted_error(error):
            return True
        raise


class _EndsQuietly:
    """Mixin for napari workers: nothing escapes ``run`` (PyQt would abort Python)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # emitting failed: the signals object is gone (exit)
            if not is_deleted_error(error):
                traceback.print_exception(error, file=sys.stderr)


class PluginGeneratorWorker(_EndsQuietly, GeneratorWorker):
    """napari's generator worker that never aborts Python (see the module docstring) and closes
    its job in its own thread when it stops early: a job cancelled inside ``with
    torch.inference_mode():`` would otherwise leave that pool thread in inference mode (thread
    state), and the next job on it (a training) would fail with "does not require grad"."""

    def work(self) -> Any:
        try:
            return super().work()
        finally:
            close = getattr(self._gen, "close", None)
            if close is not None:
                try:
                    close()  # runs the job's finally / __exit__ here, in the worker thread
                except Exception:  # noqa: BLE001 - a job that fails while closing must not abort the thread
                    pass


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


def runtime_errors_reported(job: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    """Run ``job``; a RuntimeError it raises comes out as :class:`JobFailed`."""
    try:
        return (yield from job)
    except RuntimeError as error:
        raise JobFailed(str(error)) from error


class JobFailed(Exception):
    """A job's RuntimeError (torch raises them), re-raised as this: napari's generator worker
    takes a RuntimeError for "the worker was deleted" and ends without ``errored`` or
    ``finished``, which would leave the dock busy for good."""


def start_thread(function: Callable[..., Any], *args: Any, on_returned: Callable[[Any], None],
                 on_errored: Callable[[BaseException], None], owner: Any = None) -> GeneratorWorker | FunctionWorker:
    """Run a plain function (no progress, no Cancel: e.g. a brain mask) in a worker thread.

    A generator ``function`` (progress reports ignored) stops at its next report when the
    worker is asked to quit. When ``owner`` (the dock) is destroyed first (the dock or the
    viewer closed), the worker is asked to quit and the callbacks are not called; a callback
    that meets a widget deleted without that signal reaching us (at teardown) stops
    quietly: nothing touches a deleted widget.
    """
    alive = [True]
    if inspect.isgeneratorfunction(function):
        worker = new_worker(runtime_errors_reported, function(*args))
    else:
        worker = new_worker(function, *args)

    def owner_gone(*_: object) -> None:
        alive[0] = False
        worker.quit()

    if owner is not None:
        owner.destroyed.connect(owner_gone)

    def guarded(callback: Callable[[Any], None]) -> Callable[[Any], None]:
        def call(value: Any) -> None:
            if not alive[0] or (owner is not None and viewer_closed(owner)):
                return
            try:
                callback(value)
            except RuntimeError as error:
                if not is_deleted_error(error):
                    raise
        return call

    worker.returned.connect(guarded(on_returned))
    worker.errored.connect(guarded(on_errored))
    worker.start()
    return worker


atexit.register(stop_all_workers)
