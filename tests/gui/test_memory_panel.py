"""The memory panel: core.memory's estimate against the GPU (or the 8 GB reference GPU); Measure and
Fit batch size on a GPU (faked here), disabled with the reason on a machine without one."""

from __future__ import annotations

import types

import torch

from core.config import StudioConfig
from gui.memory_estimate import estimate_memory
from gui.presets import load_preset
from gui.widgets import memory_panel
from gui.widgets.memory_panel import MemoryPanel


def test_estimate_against_the_reference_gpu_without_one():
    est = estimate_memory(load_preset("8 GB GPU"))
    assert set(est.parts) == {"weights", "gradients", "optimizer_state", "activations",
                              "workspace", "cuda_context"}
    assert est.total == sum(est.parts.values()) and 20e6 < est.params < 35e6  # MiT-B2
    if not torch.cuda.is_available():
        assert not est.on_this_machine and "reference GPU" in est.device_name
        assert est.fits and est.device_total == 8 * 2**30
        assert not estimate_memory(load_preset("Large GPU")).fits


def test_panel_updates_in_the_background(qtbot):
    panel = MemoryPanel()
    qtbot.addWidget(panel)
    config = StudioConfig()
    panel.set_config(config)
    qtbot.waitUntil(lambda: panel.estimate is not None, timeout=60_000)
    assert "Estimated peak" in panel.summary.text()
    first = panel.estimate.total
    config.model.variant = "b2"
    panel.set_config(config)
    qtbot.waitUntil(lambda: panel.estimate.total != first, timeout=60_000)
    assert panel.estimate.params > 20e6 and "optimizer&nbsp;state" in panel.parts.text()
    config.data.image_size = 100
    panel.set_config(config)
    qtbot.waitUntil(lambda: "No estimate" in panel.summary.text(), timeout=60_000)
    assert "multiple of 32" in panel.summary.text()
    panel.wait()


def test_gpu_actions_are_disabled_with_the_reason_without_a_gpu(qtbot, monkeypatch):
    monkeypatch.setattr(memory_panel, "gpu_actions_available",
                        lambda: (False, "Needs an NVIDIA GPU and the CUDA build of PyTorch"))
    panel = MemoryPanel()
    qtbot.addWidget(panel)
    assert not panel.measure_button.isEnabled() and not panel.fit_button.isEnabled()
    assert "Needs an NVIDIA GPU" in panel.fit_button.toolTip()


def test_fit_batch_size_sets_the_form(qtbot, window, monkeypatch):
    monkeypatch.setattr(memory_panel, "gpu_actions_available", lambda: (True, "Runs on a GPU."))
    monkeypatch.setattr(memory_panel, "fit_batch_size", lambda cfg: types.SimpleNamespace(
        batch_size=14, accumulate_grad_batches=1, device_name="Fake GPU"))
    from gui.widgets.memory_panel import MemoryPanel as Panel

    page = window.train_page
    page.memory.deleteLater()
    page.memory = Panel()  # built with the faked GPU
    page.memory.batch_size_found.connect(page._use_batch_size)
    qtbot.addWidget(page.memory)
    page.memory.set_config(page.form.config())
    qtbot.waitUntil(lambda: page.memory.current is not None, timeout=10_000)
    assert page.memory.fit_button.isEnabled()
    page.memory.fit_button.click()
    qtbot.waitUntil(lambda: page.form.config().train.batch_size == 14, timeout=10_000)
    assert "Largest batch that fits on Fake GPU: 14" in page.memory.gpu_result.text()
    page.memory.set_training(True)
    assert not page.memory.fit_button.isEnabled()  # the GPU is busy while a run trains
    page.memory.wait()
