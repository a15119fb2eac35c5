"""Run inference generators in napari thread workers: progress bar, Cancel, errors, busy state.

A job is a plain generator yielding ``(done, total, message)`` and returning its result
(e.g. :func:`napari_mentalmap.inference.mental_map.hallucinate`). :class:`JobRunner` wraps
it in a napari ``GeneratorWorker``. Cancel frees the dock at once: the runner lets go of
the worker (nothing it delivers afterwards is shown) and ``worker.quit()`` stops the job at
its next yield (between batches), unseen; so a cancelled job never adds layers, and a long
step (seconds on a loaded machine) does not hold the dock. The result is shown in the GUI thread in steps, one per event-loop turn
(adding a napari layer costs 0.1-0.3 s), so the viewer keeps repainting in between; the
runner stays busy until the last step.

torch threads: torch's intra-op thread count is per OS thread under OpenMP, so a worker
thread does not necessarily see what the GUI thread set. :func:`threaded_job` records
``torch.get_num_threads()`` as found inside the worker and sets it to the GUI thread's
value when they differ (see ``benchmarks/gui_bench.py`` for the measurement).

Closing: every worker comes from :func:`._threads.new_worker` (no abort when Python exits
while one runs; see there). A dock that is closed or destroyed asks its workers to quit
and ignores what they deliver afterwards.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import GeneratorWorker
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QWidget

from ..inference.jobs import Progress
from ._threads import (  # noqa: F401 (start_thread re-exported for the docks)
    JobFailed,
    is_deleted_error,
    new_worker,
    runtime_errors_reported,
    start_thread,
    viewer_closed,
)


@dataclass
class JobStats:
    """What happened to one job (for the status line, tests and the GUI benchmark)."""

    name: str
    torch_threads_main: int | None  # None: torch not loaded in the GUI thread (nothing to match)
    torch_threads_found: int = 0  # torch.get_num_threads() when the worker started
    torch_threads_used: int = 0  # after matching the GUI thread's count
    seconds: float = 0.0  # time of the generator inside the worker
    outcome: str = "running"  # running | done | cancelled | failed
    error: str = ""


def threaded_job(job: Generator[Progress, None, Any], stats: JobStats) -> Generator[Progress, None, Any]:
    """Drive ``job`` inside the worker thread, matching torch's thread count and timing it.
    torch is imported here (in the worker) when the GUI thread has not loaded it."""
    import torch

    stats.torch_threads_found = torch.get_num_threads()
    if stats.torch_threads_main is not None and stats.torch_threads_found != stats.torch_threads_main:
        torch.set_num_threads(stats.torch_threads_main)
    stats.torch_threads_used = torch.get_num_threads()
    started = time.perf_counter()
    result = yield from runtime_errors_reported(job)
    stats.seconds = time.perf_counter() - started
    return result


def gui_torch_threads() -> int | None:
    """torch's thread count in the calling (GUI) thread, or None when torch is not loaded."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def _load(modules: Sequence[str]) -> list[str]:
    for name in modules:
        importlib.import_module(name)
    from ..device import available_devices

    return available_devices()


def warm_up(owner: QWidget, modules: Sequence[str], device_combo: Any | None = None) -> GeneratorWorker:
    """Import ``modules`` (torch and the models) in a worker thread, so that opening a dock
    never waits for them; then add the torch devices found (GPUs) to ``device_combo``."""

    def ready(devices: list[str]) -> None:
        if device_combo is not None:
            present = {device_combo.itemText(i) for i in range(device_combo.count())}
            device_combo.addItems([d for d in devices if d not in present])

    return start_thread(_load, tuple(modules), on_returned=ready,
                        on_errored=lambda error: report_error(f"loading the models failed: {error}"), owner=owner)


def report_error(message: str) -> None:
    """Show ``message`` as a napari error notification."""
    show_error(message)


class _RemovalWatcher(QObject):
    """Calls ``on_removed`` when a docked widget is taken out of its dock (parent set to None)."""

    def __init__(self, owner: QWidget, on_removed: Callable[[], None]) -> None:
        super().__init__(owner)
        self.on_removed = on_removed
        self.docked = owner.parent() is not None
        owner.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.ParentChange:
            if watched.parent() is not None:
                self.docked = True
            elif self.docked:
                self.on_removed()
        return False


class JobRunner:
    """One job at a time: progress bar, status label, Cancel button and widgets disabled meanwhile."""

    def __init__(
        self,
        progress: QProgressBar,
        status: QLabel,
        cancel_button: QPushButton,
        busy_widgets: list[QWidget],
        title: str,
        owner: QWidget | None = None,
    ) -> None:
        """``owner``: the dock; when it is closed (taken out of its dock or destroyed) the
        running job is stopped and its result never shown."""
        self.progress = progress
        self.status = status
        self.cancel_button = cancel_button
        self.busy_widgets = busy_widgets
        self.title = title
        self.owner = owner
        self.worker: GeneratorWorker | None = None
        self.stopping: list[GeneratorWorker] = []  # cancelled, finishing their current step unseen
        self.stats: JobStats | None = None
        self._on_returned: Callable[[Any], list[Callable[[], str]]] | None = None
        self._steps: list[Callable[[], str]] = []
        self._shown: list[str] = []
        self.closed = False
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        # the dock (or the viewer) is going away: stop the job, show nothing
        self.progress.destroyed.connect(self.shutdown)
        self._watcher = _RemovalWatcher(owner, self.shutdown) if owner is not None else None

    @property
    def busy(self) -> bool:
        """True while a job is running or its result is being shown."""
        return self.worker is not None or bool(self._steps)

    def start(self, name: str, job: Generator[Progress, None, Any],
              on_returned: Callable[[Any], list[Callable[[], str]]]) -> GeneratorWorker:
        """Run ``job`` in a worker thread.

        ``on_returned(result)`` runs in the GUI thread and returns display steps; each step
        runs in its own event-loop turn and returns a short description of what it showed.
        """
        if self.busy:
            raise RuntimeError("a job is already running")
        self.stats = JobStats(name=name, torch_threads_main=gui_torch_threads())
        self._on_returned = on_returned
        worker = new_worker(threaded_job, job, self.stats)
        for signal, callback in ((worker.yielded, self._on_progress), (worker.returned, self._returned),
                                 (worker.errored, self._errored), (worker.aborted, self._aborted),
                                 (worker.finished, self._finished)):
            signal.connect(self._if_current(worker, callback))
        worker.finished.connect(lambda: self.stopping.remove(worker) if worker in self.stopping else None)
        self.worker = worker
        for widget in self.busy_widgets:
            widget.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy indicator until the first progress report
        self.status.setText(f"{name}: starting …")
        worker.start()
        return worker

    def shutdown(self, *_: object) -> None:
        """The dock is closing: stop the job at its next batch and never show its result."""
        self.closed = True
        self._steps = []
        if self.worker is not None:
            self.worker.quit()

    def cancel(self) -> None:
        """Stop the job: the dock is free at once and shows nothing of it; the worker stops at
        the job's next progress report, unseen (in :attr:`stopping` until then)."""
        worker = self.worker
        if worker is None:
            return
        worker.quit()
        self.stopping.append(worker)
        self.worker = None
        self._aborted()
        self._cleanup()

    def _if_current(self, worker: GeneratorWorker, callback: Callable[..., None]) -> Callable[..., None]:
        """``callback``, called only while ``worker`` is this runner's job (not a cancelled one)."""
        def call(*args: Any) -> None:
            if worker is self.worker:
                callback(*args)
        return call

    def _on_progress(self, progress: Progress) -> None:
        if self.closed:
            return
        done, total, message = progress
        self.progress.setRange(0, max(int(total), 1))
        self.progress.setValue(int(done))
        self.status.setText(f"{self.stats.name}: {message} ({done}/{total})")

    def _stopped(self) -> bool:
        """True (and the job stopped) once the dock or its viewer was closed."""
        if not self.closed and self.owner is not None and viewer_closed(self.owner):
            self.shutdown()
        return self.closed

    def _returned(self, result: Any) -> None:
        if self._stopped():
            return
        if self.worker is not None and self.worker.abort_requested:  # Cancel (or napari closing) came first
            self._aborted()
            return
        self.cancel_button.setEnabled(False)
        try:
            self._steps = list(self._on_returned(result)) if self._on_returned is not None else []
        except Exception as error:  # preparing the display failed: report it like a job error
            self._errored(error)
            return
        self._shown = []
        self.status.setText(f"{self.stats.name}: showing the result …")
        QTimer.singleShot(0, self._next_step)

    def _next_step(self) -> None:
        """Run one display step; the last one completes the job."""
        if self._stopped():
            return
        if self._steps:
            step = self._steps.pop(0)
            try:
                self._shown.append(step())
            except Exception as error:
                self._steps = []
                self._errored(error)
                self._cleanup()
                return
        if self._steps:
            QTimer.singleShot(0, self._next_step)
            return
        self.stats.outcome = "done"
        self.status.setText(
            f"{self.stats.name}: done in {self.stats.seconds:.1f} s "
            f"(torch threads {self.stats.torch_threads_used}); shown: " + ", ".join(self._shown)
        )
        self._cleanup()

    def _errored(self, error: BaseException) -> None:
        if self.closed:
            return
        self.stats.outcome = "failed"
        cause = error.__cause__ if isinstance(error, JobFailed) and error.__cause__ is not None else error
        self.stats.error = f"{type(cause).__name__}: {error}"
        self.status.setText(f"{self.stats.name} failed: {error}")
        report_error(f"{self.title}: {self.stats.name} failed: {error}")

    def _aborted(self) -> None:
        self.stats.outcome = "cancelled"
        if self.closed:
            return
        self.status.setText(f"{self.stats.name}: cancelled, no layers added")

    def _finished(self) -> None:
        self.worker = None
        if self.closed:
            return
        if not self._steps:
            self._cleanup()

    def _cleanup(self) -> None:
        """Re-enable the widgets once the worker has finished and the result is shown."""
        if self.worker is not None or self._steps:
            return
        self._on_returned = None
        for widget in self.busy_widgets:
            widget.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if self.stats.outcome == "done" else 0)


class LatestOnly:
    """Run ``function(argument)`` in a worker thread for live controls (sliders): while one
    call runs, only the newest request waits; ``on_result`` gets each result in the GUI thread."""

    def __init__(self, function: Callable[[Any], Any], on_result: Callable[[Any], None],
                 on_error: Callable[[BaseException], None] | None = None, owner: QWidget | None = None) -> None:
        """``owner``: the dock; results arriving after its viewer was closed are dropped."""
        self.function = function
        self.owner = owner
        self.on_result = on_result
        self.on_error = on_error or (lambda error: report_error(str(error)))
        self.worker = None
        self.closed = False
        self._pending: list[Any] = []

    @property
    def busy(self) -> bool:
        return self.worker is not None or bool(self._pending)

    def shutdown(self, *_: object) -> None:
        """The dock is closing: drop waiting requests and ignore the running one's result."""
        self.closed = True
        self._pending = []
        if self.worker is not None:
            self.worker.quit()

    def request(self, argument: Any) -> None:
        """Compute for ``argument`` now, or after the running call (replacing any waiting one)."""
        self._pending = [argument]
        if self.worker is None:
            self._start_next()

    def _start_next(self) -> None:
        if not self._pending or self.closed:
            return
        argument = self._pending.pop()
        worker = new_worker(self.function, argument)
        worker.returned.connect(lambda value: self._deliver(self.on_result, value))
        worker.errored.connect(lambda error: self._deliver(self.on_error, error))
        worker.finished.connect(self._finished)
        self.worker = worker
        worker.start()

    def _deliver(self, callback: Callable[[Any], None], value: Any) -> None:
        if self.closed or (self.owner is not None and viewer_closed(self.owner)):
            return
        try:
            callback(value)
        except RuntimeError as error:  # the dock's widgets were deleted first (teardown)
            if not is_deleted_error(error):
                raise

    def _finished(self) -> None:
        self.worker = None
        self._start_next()
