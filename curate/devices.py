"""Which device a model runs on: ``device: auto | cpu | cuda``; the one place
the package decides it (every stage's models, the ASR backends, the LM scorer,
and ``validate.use_gpu``).

``auto`` takes a GPU when the worker sees one (Ray shows a worker only the GPUs
its ``resources.gpus`` reserved), else the CPU. ``cuda`` where none is visible
is refused with a message naming the recipe key, at ``curate check`` when the
checking machine has none, and again in the worker. For a Ray Train job
(``curate validate``) the question is asked of the cluster instead:
:func:`ray_use_gpu`.
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


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster has (0 when Ray is not started)."""
    import ray

    if not ray.is_initialized():
        return 0.0
    return float(ray.cluster_resources().get("GPU", 0))


def ray_use_gpu(requested: bool | str, key: str, workers: int = 1) -> bool:
    """Whether each of ``workers`` Ray Train workers asks for a GPU: ``auto`` when the cluster has one
    for every worker, ``True``/``False`` as said; ``True`` on a cluster without any GPU is refused
    (DeviceUnavailable), as a worker waiting for a GPU that no node has would wait for ever."""
    if requested is False:
        return False
    have = cluster_gpus()
    if requested == "auto":
        return have >= workers
    if have == 0:
        raise DeviceUnavailable(f"{key}: true asks every worker for a GPU, but the Ray cluster has none. Use "
                                f"{key.rsplit('.', 1)[-1]}: auto (a GPU when Ray sees one, else the CPU) or false")
    return True
