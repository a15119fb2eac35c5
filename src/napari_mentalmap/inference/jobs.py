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


def part_of(job: Generator[Progress, None, Result], start: int, span: int, total: int) -> Job:
    """Run ``job`` as one part of a larger job: its ``(done, of, message)`` reports become
    ``(start + span * done / of, total, message)``; returns its result. Closing the larger job
    closes ``job`` too (a cancel stops it at once)."""
    try:
        while True:
            try:
                done, of, message = next(job)
            except StopIteration as stop:
                return stop.value
            yield start + (span * done) // max(of, 1), total, message
    finally:
        job.close()
