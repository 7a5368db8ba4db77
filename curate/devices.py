"""Which device a model stage runs on: ``device: auto | cpu | cuda``.

``auto`` takes a GPU when the worker sees one (Ray shows a worker only the GPUs
its ``resources.gpus`` reserved), else the CPU. ``cuda`` where none is visible
is refused with a message naming the recipe key, at ``curate check`` when the
checking machine has none, and again in the worker.
"""

from __future__ import annotations

from typing import Literal

Device = Literal["auto", "cpu", "cuda"]


class DeviceUnavailable(RuntimeError):
    """The recipe asks for a device this machine does not have."""


def cuda_count(backend: str = "torch") -> int:
    """GPUs visible to this process through ``backend`` (torch or ctranslate2)."""
    try:
        if backend == "ctranslate2":
            import ctranslate2

            return int(ctranslate2.get_cuda_device_count())
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install is the same as none here
        return 0


def no_gpu_message(key: str) -> str:
    return (f"{key}: cuda asked for, but no CUDA GPU is visible here. Use device: auto (a GPU when a worker has "
            f"one, else the CPU) or cpu; on a cluster whose driver has no GPU, set device: auto with "
            f"resources: {{gpus: 1}} so Ray places the workers on GPU nodes")


def resolve(requested: str, key: str, backend: str = "torch") -> str:
    """'cpu' or 'cuda' for ``requested``; raise DeviceUnavailable for cuda without a GPU."""
    if requested == "cpu":
        return "cpu"
    have = cuda_count(backend) > 0
    if requested == "cuda" and not have:
        raise DeviceUnavailable(no_gpu_message(key))
    return "cuda" if have else "cpu"


def preflight(requested: str, key: str, backend: str = "torch") -> list[str]:
    """`curate check`'s problem for ``device: cuda`` on a machine without a GPU."""
    if requested == "cuda" and cuda_count(backend) == 0:
        return [no_gpu_message(key)]
    return []
