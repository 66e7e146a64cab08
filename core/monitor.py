"""Device statistics for the live charts: GPU through NVML (nvidia-ml-py), CPU and RAM through psutil.

``DeviceMonitor.read()`` is cheap (well under a millisecond per call), so a window may call it once a
second on its own thread. Without an NVIDIA driver the GPU fields are ``None`` and ``gpu_reason`` says
why; CPU and RAM are always there.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class DeviceStats:
    """One reading. Memory in bytes, utilisation in percent, temperature in °C."""
    time: float
    cpu_percent: float
    ram_used: int
    ram_total: int
    gpu_name: str | None = None
    gpu_util: float | None = None
    gpu_mem_used: int | None = None
    gpu_mem_total: int | None = None
    gpu_temp: float | None = None

    @property
    def has_gpu(self) -> bool:
        return self.gpu_mem_total is not None


def _first_visible_gpu() -> int:
    """NVML index of the GPU that CUDA calls device 0 (first entry of CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0


class DeviceMonitor:
    """Reads the training GPU (if any) and the machine's CPU and RAM."""

    def __init__(self, gpu_index: int | None = None):
        self.gpu_reason = ""
        self._nvml = None
        self._handle = None
        self.gpu_name: str | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            index = _first_visible_gpu() if gpu_index is None else gpu_index
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(self._handle)
            self.gpu_name = name.decode() if isinstance(name, bytes) else str(name)
            self._nvml = pynvml
        except ImportError:
            self.gpu_reason = "nvidia-ml-py is not installed"
        except Exception as exc:  # noqa: BLE001 - pynvml.NVMLError and driver-library load errors
            self.gpu_reason = f"no NVIDIA GPU found ({exc})"
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement window

    @property
    def has_gpu(self) -> bool:
        return self._handle is not None

    def read(self) -> DeviceStats:
        ram = psutil.virtual_memory()
        cpu = psutil.cpu_percent(interval=None)
        if self._handle is None:
            return DeviceStats(time.time(), cpu, int(ram.used), int(ram.total))
        nvml = self._nvml
        try:
            util = nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
            memory = nvml.nvmlDeviceGetMemoryInfo(self._handle)
            temp = nvml.nvmlDeviceGetTemperature(self._handle, nvml.NVML_TEMPERATURE_GPU)
        except Exception as exc:  # noqa: BLE001 - a GPU that fell off the bus: keep CPU readings
            self.gpu_reason = f"GPU stopped answering ({exc})"
            self._handle = None
            return DeviceStats(time.time(), cpu, int(ram.used), int(ram.total))
        return DeviceStats(time.time(), cpu, int(ram.used), int(ram.total), self.gpu_name,
                           float(util), int(memory.used), int(memory.total), float(temp))

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down a driver that is already gone
                pass
            self._nvml = self._handle = None
