"""core.monitor: CPU/RAM always; GPU through NVML when there is one (faked here)."""

from __future__ import annotations

import sys
import types

from core.monitor import DeviceMonitor


def test_cpu_and_ram_without_a_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if nvidia-ml-py were missing
    monitor = DeviceMonitor()
    assert not monitor.has_gpu and "nvidia-ml-py" in monitor.gpu_reason
    stats = monitor.read()
    assert 0 <= stats.cpu_percent <= 100
    assert 0 < stats.ram_used < stats.ram_total
    assert not stats.has_gpu and stats.gpu_util is None


def _fake_nvml(fail_reads: bool = False):
    nvml = types.SimpleNamespace(NVML_TEMPERATURE_GPU=0, shutdowns=0)
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByIndex = lambda i: f"gpu{i}"
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA Fake 8GB"

    def util(handle):
        if fail_reads:
            raise RuntimeError("GPU is lost")
        return types.SimpleNamespace(gpu=57)

    nvml.nvmlDeviceGetUtilizationRates = util
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=3 * 2**30, total=8 * 2**30)
    nvml.nvmlDeviceGetTemperature = lambda h, kind: 64

    def shutdown():
        nvml.shutdowns += 1

    nvml.nvmlShutdown = shutdown
    return nvml


def test_gpu_readings_through_nvml(monkeypatch):
    nvml = _fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monitor = DeviceMonitor()
    assert monitor.has_gpu and monitor.gpu_name == "NVIDIA Fake 8GB"
    assert monitor._handle == "gpu1"  # CUDA's device 0 is the first visible GPU
    stats = monitor.read()
    assert stats.has_gpu and stats.gpu_util == 57 and stats.gpu_temp == 64
    assert (stats.gpu_mem_used, stats.gpu_mem_total) == (3 * 2**30, 8 * 2**30)
    monitor.close()
    assert nvml.shutdowns == 1


def test_a_gpu_that_stops_answering_leaves_cpu_readings(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(fail_reads=True))
    monitor = DeviceMonitor()
    stats = monitor.read()
    assert not stats.has_gpu and stats.ram_total > 0
    assert "stopped answering" in monitor.gpu_reason


def test_device_charts_draw_gpu_readings(qtbot, monkeypatch):
    from gui.widgets.charts import DeviceCharts

    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml())
    charts = DeviceCharts(DeviceMonitor(), interval_ms=50)
    qtbot.addWidget(charts)
    assert set(charts.plots) == {"gpu_util", "gpu_mem", "gpu_temp", "cpu"}
    qtbot.waitUntil(lambda: len(charts.readings) >= 3, timeout=5_000)
    used = charts.curves["gpu_mem"].yData
    assert len(used) >= 3 and used[-1] == 3.0
    assert charts.curves["gpu_mem_total"].yData[-1] == 8.0
    assert charts.plots["gpu_mem"].viewRange()[1][1] >= 8.0  # the axis ends at the capacity
    charts.stop()
