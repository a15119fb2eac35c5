"""Command line: ``mentalmap info|demo|predict|train|eval``.

``predict``, ``train`` and ``eval`` come from ``napari_mentalmap.predict``,
``napari_mentalmap.training.commands`` and ``napari_mentalmap.evaluation.commands``: each module defines ``add_parser(subparsers)``
which adds its subcommand and sets ``func`` (called with the parsed arguments).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from . import __version__
from .checkpoints import WEIGHTS_DIR  # noqa: E402

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "napari_mentalmap.predict",
    "napari_mentalmap.training.commands",
    "napari_mentalmap.evaluation.commands",
)
LAZY_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "napari_mentalmap.predict": ("predict", "run a model over files: anomaly maps or BRUNO mental maps"),
    "napari_mentalmap.training.commands": ("train", "train a model (the shared data, or your own labelled scans: segmenter)"),
    "napari_mentalmap.evaluation.commands": ("eval", "evaluate models on the held-out data"),
}
"""Command name and help of each module in :data:`SUBCOMMAND_MODULES`, so that ``main`` imports
only the module of the command it runs (``mentalmap --help`` imports no torch)."""
DEMO_WIDGETS: tuple[str, ...] = ("Mental maps (BRUNO)",)


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def shipped_weights(weights_dir: Path = WEIGHTS_DIR) -> list[tuple[str, int]]:
    """(file name, size in bytes) of every ``*.pt`` checkpoint shipped with the package."""
    if not weights_dir.is_dir():
        return []
    return [(path.name, path.stat().st_size) for path in sorted(weights_dir.glob("*.pt"))]


def info_lines() -> list[str]:
    """Lines printed by ``mentalmap info``: versions, devices, shipped weights."""
    from .device import available_devices, pick_device

    lines = [
        f"napari-mentalmap {__version__}",
        f"python   {platform.python_version()} ({sys.executable})",
    ]
    for package in ("torch", "napari", "nibabel", "numpy", "npe2"):
        lines.append(f"{package:<8} {_package_version(package)}")
    lines.append(f"device   {pick_device('auto')} (available: {', '.join(available_devices())})")
    weights = shipped_weights()
    if weights:
        lines.append(f"weights  {len(weights)} shipped in {WEIGHTS_DIR}:")
        lines.extend(f"  {name}  {size / 1e6:.2f} MB" for name, size in weights)
    else:
        lines.append(f"weights  none shipped yet in {WEIGHTS_DIR}")
    return lines


def run_info(args: argparse.Namespace) -> int:
    """``mentalmap info``."""
    print("\n".join(info_lines()))
    return 0


def setup_demo_viewer(viewer, run_widgets: bool = False):
    """Load the sample T1 through our reader, show the middle axial slice, dock the widgets.

    Docked widgets with a ``prepare_demo()`` method get it called (the mental map widget
    preselects 5 evenly spaced context slices). With ``run_widgets``, every docked widget
    that has a ``run_demo()`` method is asked to start its job on the sample.
    """
    from ._sample_data import SAMPLE_T1

    viewer.open(str(SAMPLE_T1), plugin="napari-mentalmap", name="sample T1")
    viewer.dims.ndisplay = 2
    viewer.dims.set_current_step(0, viewer.dims.nsteps[0] // 2)
    docked = [
        viewer.window.add_plugin_dock_widget("napari-mentalmap", widget_name)[1]
        for widget_name in DEMO_WIDGETS
    ]
    for widget in docked:
        if callable(getattr(widget, "prepare_demo", None)):
            widget.prepare_demo()
    viewer.reset_view()
    if run_widgets:
        for widget in docked:
            if callable(getattr(widget, "run_demo", None)):
                widget.run_demo()
    return viewer


def wait_while(busy: Callable[[], bool], timeout: float = 300.0, settle: int = 10) -> None:
    """Run the Qt event loop while ``busy()`` (at most ``timeout`` s), then ``settle`` more
    turns: for scripts that drive the docks without ``napari.run`` (screenshots)."""
    import time

    from napari.qt import get_qapp

    app, started = get_qapp(), time.time()
    while busy() and time.time() - started < timeout:
        app.processEvents()
        time.sleep(0.01)
    for _ in range(settle):
        app.processEvents()


def save_window_screenshot(viewer, path: str | Path) -> Path:
    """Screenshot of the whole window (canvas and docks) after pending events are processed."""
    from napari.qt import get_qapp

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    get_qapp().processEvents()
    viewer.reset_view()
    get_qapp().processEvents()
    viewer.screenshot(str(path), canvas_only=False)
    return path


def demo_widgets_busy(viewer) -> bool:
    """True while a docked widget reports a running job (its ``busy`` attribute)."""
    return any(bool(getattr(widget, "busy", False)) for widget in viewer.window.dock_widgets.values())


def run_demo(args: argparse.Namespace) -> int:
    """``mentalmap demo``: napari with the sample T1 and the plugin's dock widgets."""
    import napari
    from qtpy.QtCore import QTimer

    viewer = setup_demo_viewer(napari.Viewer(title="napari-mentalmap demo"), run_widgets=args.run)
    if args.screenshot:
        app = napari.qt.get_qapp()
        saved: list[Path] = []

        def take_screenshot_and_quit() -> None:
            if demo_widgets_busy(viewer):  # --run: wait for the jobs before the screenshot
                QTimer.singleShot(250, take_screenshot_and_quit)
                return
            saved.append(save_window_screenshot(viewer, args.screenshot))
            print(f"saved {saved[0]}")
            viewer.close()
            app.quit()

        QTimer.singleShot(int(args.delay * 1000), take_screenshot_and_quit)
        napari.run()
        return 0 if saved and saved[0].exists() else 1
    napari.run()
    return 0


def _add_optional_subcommands(subparsers: argparse._SubParsersAction, only: str | None = None) -> None:
    """Add ``predict`` / ``train`` / ``eval`` when their modules exist; real import errors propagate.

    With ``only`` (a command name, or ``""`` for none), the modules of the other known commands
    are not imported: they are listed with their help and a stub that loads them when run.
    """
    for module_name in SUBCOMMAND_MODULES:
        if only is not None and module_name in LAZY_SUBCOMMANDS and LAZY_SUBCOMMANDS[module_name][0] != only:
            name, help_text = LAZY_SUBCOMMANDS[module_name]
            subparsers.add_parser(name, help=help_text, add_help=False)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        module.add_parser(subparsers)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``mentalmap`` argument parser with all available subcommands (with ``only``: only that
    command's module imported, see :func:`_add_optional_subcommands`)."""
    parser = argparse.ArgumentParser(
        prog="mentalmap",
        description="Mental maps (BRUNO), anomaly maps and latent explorer for brain MRI.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = subparsers.add_parser("info", help="versions, torch device and shipped weights")
    info.set_defaults(func=run_info)

    demo = subparsers.add_parser("demo", help="open napari with the sample T1 and the plugin widgets")
    demo.add_argument("--screenshot", metavar="PATH", help="save a screenshot of the window and quit")
    demo.add_argument(
        "--delay", type=float, default=2.0, help="seconds to let the window settle before the screenshot"
    )
    demo.add_argument(
        "--run", action="store_true", help="start each docked widget's job on the sample (its run_demo())"
    )
    demo.set_defaults(func=run_demo)

    _add_optional_subcommands(subparsers, only)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mentalmap`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in argv if not word.startswith("-")), "")
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    args.argv = argv  # what the outputs' sidecars record as the command line
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
