"""The weights registry and the one safe loader."""

from __future__ import annotations

import pathlib

import pytest
import torch

from napari_mentalmap.checkpoints import (
    SHIPPED,
    WeightsError,
    WeightsNotFoundError,
    load_record,
    resolve,
    save_record,
    shipped,
)


class _Payload:
    """Unpickling this object would create ``marker`` (what a malicious weights file does)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"config": {}, "state_dict": {}, "payload": _Payload(marker)}, evil)
    assert not marker.exists()
    with pytest.raises(WeightsError, match="evil.pt") as error:
        load_record(evil, "bruno")
    assert "refused" in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("loader", ["bruno", "anomaly", "latent", "skullstrip"])
def test_every_loader_refuses_a_pickle_payload(tmp_path, loader):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"payload": _Payload(marker)}, evil)
    with pytest.raises(WeightsError, match="evil.pt"):
        if loader == "bruno":
            from napari_mentalmap.inference.mental_map import load_bruno

            load_bruno(evil)
        elif loader == "anomaly":
            from napari_mentalmap.inference.anomaly import load_anomaly_model

            load_anomaly_model(evil)
        elif loader == "latent":
            from napari_mentalmap.inference.latent import load_slice_vae

            load_slice_vae(evil, device="cpu")
        else:
            from napari_mentalmap.models.skullstrip import load_model

            load_model(evil)
    assert not marker.exists()


def test_missing_corrupt_and_wrong_kind(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="absent.pt"):
        load_record(tmp_path / "absent.pt", "bruno")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="broken.pt"):
        load_record(broken)
    with pytest.raises(WeightsError, match="not a bruno"):
        load_record(shipped("uad_spatial2d").path, "bruno")
    with pytest.raises(WeightsError, match="no shipped model"):
        shipped("nonsense")


def test_every_shipped_file_loads_safely_with_canonical_keys():
    for model in SHIPPED.values():
        record = load_record(model.path, model.format)
        assert record["format"] == model.format
        assert "state_dict" in record, model.name
        assert "model" not in record and "model_config" not in record and "spec" not in record


def test_save_record_round_trip_is_plain_and_atomic(tmp_path):
    import numpy as np

    path = tmp_path / "run" / "last.pt"
    save_record(path, {"state_dict": {"w": torch.ones(2)}, "grid": (48, 64), "values": np.float32(0.5),
                       "residual": np.zeros((2, 2), np.float32), "where": tmp_path})
    record = load_record(path)
    assert record["grid"] == [48, 64] and record["values"] == 0.5 and record["where"] == str(tmp_path)
    assert torch.equal(record["residual"], torch.zeros(2, 2))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_resolve_names_and_paths(tmp_path):
    assert resolve(None, "bruno_t1") == shipped("bruno_t1").path
    assert resolve("uad_dense2d", "bruno_t1") == shipped("uad_dense2d").path
    assert resolve(tmp_path / "x.pt", "bruno_t1") == tmp_path / "x.pt"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("case", ["pickle-payload", "wrong-kind-long-hint", "not-a-checkpoint", "truncated"])
def test_weights_refusals_fit_on_one_line(tmp_path, case):
    """Each refusal is one short line that keeps the cause and the file name (it was a
    300-character line with terminal colour codes for a pickle payload)."""
    path = tmp_path / f"{case}.pt"
    if case == "pickle-payload":
        torch.save({"config": {}, "state_dict": {}, "payload": _Payload(tmp_path / "pwned")}, path)
        expected, cause = "bruno", "was refused: it holds a pickle payload (getattr) that could run code"
    elif case == "wrong-kind-long-hint":  # the DAE's retraining command has many options
        path.write_bytes(shipped("bruno_t1").path.read_bytes())
        expected, cause = "uad_dae", "holds a bruno model, not a uad_dae model; train one with " \
                                     "`mentalmap train uad --kind dae2d`"
    elif case == "not-a-checkpoint":
        path.write_bytes(b"\x80" + b"garbage" * 50)
        expected, cause = "bruno", "is not a readable PyTorch checkpoint"
    else:
        path.write_bytes(shipped("skullstrip").path.read_bytes()[:5000])
        expected, cause = "skullstrip", "is not a readable PyTorch checkpoint"
    with pytest.raises(WeightsError) as error:
        load_record(path, expected)
    message = str(error.value)
    assert f"weights file {path} " in message and cause in message
    assert "\n" not in message and "\x1b" not in message
    assert len(message) - len(str(path)) <= 120, message
