"""The ``mentalmap`` command line: info, parser structure, device helper, demo screenshot."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from napari_mentalmap import cli
from napari_mentalmap.device import available_devices, pick_device


def test_info_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["info"]) == 0
    output = capsys.readouterr().out
    for word in ("python", "torch", "napari", "nibabel", "device", "weights"):
        assert word in output


def test_console_script_info() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "napari_mentalmap.cli", "info"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "torch" in result.stdout


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 1
    assert "demo" in capsys.readouterr().out


def test_shipped_weights_listing(tmp_path: Path) -> None:
    assert cli.shipped_weights(tmp_path / "absent") == []
    (tmp_path / "bruno.pt").write_bytes(b"x" * 10)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert cli.shipped_weights(tmp_path) == [("bruno.pt", 10)]


def test_optional_subcommands_skip_only_missing_modules(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("napari_mentalmap.not_a_module_here",))
    parser = cli.build_parser()
    assert parser.parse_args(["info"]).func is cli.run_info

    import types

    fake = types.ModuleType("napari_mentalmap._fake_commands")

    def add_parser(subparsers: argparse._SubParsersAction) -> None:
        sub = subparsers.add_parser("fake")
        sub.set_defaults(func=lambda args: 7)

    fake.add_parser = add_parser
    monkeypatch.setitem(sys.modules, "napari_mentalmap._fake_commands", fake)
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("napari_mentalmap._fake_commands",))
    assert cli.main(["fake"]) == 7

    # A commands module that exists but fails on its own import must not be hidden.
    (tmp_path / "mentalmap_broken_commands.py").write_text("import a_dependency_that_is_missing_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("mentalmap_broken_commands",))
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_missing_xyz"):
        cli.build_parser()


def test_device_helper() -> None:
    devices = available_devices()
    assert devices[-1] == "cpu"
    assert pick_device("auto").type == devices[0]
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")
    if "cuda" not in devices:
        with pytest.raises(RuntimeError, match="not available"):
            pick_device("cuda")


def test_demo_viewer_and_screenshot(make_napari_viewer, tmp_path: Path) -> None:
    """The demo path (sample T1 through our reader + the dock widget) renders a screenshot."""
    viewer = cli.setup_demo_viewer(make_napari_viewer())
    layer = viewer.layers["sample T1"]  # plus "sample T1 contexts" (the preselected context slices)
    assert layer.scale == pytest.approx((2.0, 2.0, 2.0))
    assert viewer.dims.current_step[0] == layer.data.shape[0] // 2
    assert any("Mental maps" in name for name in viewer.window.dock_widgets)
    shot = cli.save_window_screenshot(viewer, tmp_path / "shot.png")
    assert shot.stat().st_size > 10_000
