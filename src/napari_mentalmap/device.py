"""One place that chooses the torch device: cuda if available, else mps, else cpu."""

from __future__ import annotations

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cuda", "mps", "cpu")


def _mps_available(torch_module) -> bool:
    backend = getattr(torch_module.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """Device names torch can use here, best first (always ends with ``"cpu"``)."""
    import torch

    devices: list[str] = []
    if torch.cuda.is_available():
        devices.append("cuda")
    if _mps_available(torch):
        devices.append("mps")
    devices.append("cpu")
    return devices


def pick_device(preference: str = "auto"):
    """A ``torch.device`` for ``preference`` (auto, cuda, cuda:N, mps or cpu).

    ``"auto"`` picks cuda, else mps, else cpu. An explicit device that is not
    available raises ``RuntimeError`` naming what is available.
    """
    import torch

    preference = (preference or "auto").strip().lower()
    available = available_devices()
    if preference == "auto":
        return torch.device(available[0])
    kind = preference.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {preference!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if kind not in available:
        raise RuntimeError(
            f"device {preference!r} is not available on this machine; available: {', '.join(available)}"
        )
    return torch.device(preference)
