"""What memory this machine has for a model: CUDA GPUs, or system RAM without one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

DeviceKind = Literal["cuda", "cpu"]


@dataclass(frozen=True, slots=True)
class MemoryDevice:
    """One place a model can live: a GPU (``cuda:N``) or the CPU's RAM."""

    kind: DeviceKind
    index: int
    name: str
    total_bytes: int
    free_bytes: int

    @property
    def label(self) -> str:
        """``cuda:0 NVIDIA H100`` or ``cpu (RAM)``."""
        return f"cuda:{self.index} {self.name}" if self.kind == "cuda" else f"cpu {self.name}"


def detect_gpus() -> list[MemoryDevice]:
    """CUDA devices with their free and total memory; empty without CUDA."""
    import torch  # imported here: a second or two, and only `r1serve models` needs it

    if not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        name = torch.cuda.get_device_name(index)
        devices.append(MemoryDevice("cuda", index, name, int(total), int(free)))
    return devices


def detect_ram() -> MemoryDevice:
    """System RAM: total, and what the kernel reports as available for new allocations."""
    import psutil

    memory = psutil.virtual_memory()
    return MemoryDevice("cpu", 0, "(RAM)", int(memory.total), int(memory.available))


def detect_devices() -> list[MemoryDevice]:
    """GPUs when CUDA has any, else the system RAM."""
    return detect_gpus() or [detect_ram()]


def detect_llamacpp_devices() -> list[MemoryDevice]:
    """Where the llama.cpp engine can put a model: the binding's GPUs, else the system RAM.

    The CPU wheel of the binding sees no GPU even where torch does, and then the model lives
    in RAM whatever CUDA offers.
    """
    try:
        import xllamacpp
    except ImportError:
        return [detect_ram()]
    gpus = [
        d for d in xllamacpp.get_device_info() if getattr(d["type"], "name", "").endswith("GPU")
    ]
    devices = [
        MemoryDevice(
            "cuda", index, str(d["description"]), int(d["memory_total"]), int(d["memory_free"])
        )
        for index, d in enumerate(gpus)
    ]
    return devices or [detect_ram()]


def model_home(devices: Sequence[MemoryDevice]) -> MemoryDevice:
    """The device a single-device engine would load into: the GPU with most free memory."""
    if not devices:
        raise ValueError("no devices to choose from")
    gpus = [d for d in devices if d.kind == "cuda"]
    return max(gpus or devices, key=lambda d: d.free_bytes)
