"""The job protocol shared by the docks, the CLI and the tests.

A job is a generator that yields ``(done, total, message)`` progress reports and returns
its result. It does its work between yields, so a consumer cancels it by not asking for
the next report (napari's ``worker.quit()``): nothing is half-returned. The docks run jobs
through ``widgets._worker.JobRunner``; everything else uses :func:`run_to_completion`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

Progress = tuple[int, int, str]
Result = TypeVar("Result")
Job = Generator[Progress, None, Result]


def run_to_completion(job: Generator[Progress, None, Result],
                      on_progress: Callable[[Progress], Any] | None = None) -> Result:
    """Drive ``job`` to its end without a GUI and return its result; ``on_progress`` sees
    every report (e.g. to update a tqdm bar)."""
    while True:
        try:
            report = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(report)
