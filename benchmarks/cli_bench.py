"""Command-line start-up benchmark: wall time of ``mentalmap --help`` and friends; prints a Markdown table.

    .venv/bin/python benchmarks/cli_bench.py [--repeats 5]

Each command runs in a fresh interpreter (``python -m napari_mentalmap.cli ...``), as a user
typing it would; the table gives the median and the best of ``--repeats`` runs and which
heavy modules (torch, napari, scipy, nibabel) the command imported (``-X importtime``).
Goal: ``mentalmap --help`` under 0.5 s (it took 2.6 s when the parser imported every
subcommand's models).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("--version",),
    ("predict", "--help"),
    ("predict", "bruno", "--help"),
    ("train", "--help"),
)
HEAVY: tuple[str, ...] = ("torch", "napari", "scipy", "nibabel", "lightning_fabric")
GOAL_S = 0.5


def time_command(args: tuple[str, ...]) -> float:
    """Seconds for one run of ``mentalmap ARGS`` in a new interpreter."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "napari_mentalmap.cli", *args], capture_output=True, check=True)
    return time.perf_counter() - start


def heavy_imports(args: tuple[str, ...]) -> list[str]:
    """The :data:`HEAVY` top-level packages ``mentalmap ARGS`` imports."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "napari_mentalmap.cli", *args],
                            capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    return [name for name in HEAVY if name in imported]


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    baseline = [time_command_python() for _ in range(args.repeats)]
    print(f"python start-up alone: median {statistics.median(baseline):.3f} s\n")
    print("| command | median s | best s | heavy imports | goal |")
    print("|---|---|---|---|---|")
    for command in COMMANDS:
        times = [time_command(command) for _ in range(args.repeats)]
        goal = f"< {GOAL_S} s: {'ok' if statistics.median(times) < GOAL_S else 'MISSED'}" \
            if command == ("--help",) else ""
        print(f"| `mentalmap {' '.join(command)}` | {statistics.median(times):.3f} | {min(times):.3f} | "
              f"{', '.join(heavy_imports(command)) or 'none'} | {goal} |")


def time_command_python() -> float:
    """Seconds for a bare ``python -c pass`` (the floor every command pays)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
