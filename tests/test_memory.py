"""The GPU memory estimate: checked against real CPU training steps, the built models, and itself."""

from __future__ import annotations

import json
import time

import pytest
import torch

from main import main as run_cli
from core.config import VARIANTS, ModelConfig, StudioConfig, apply_overrides
from core.errors import StudioError
from core.memory import (PARTS, DeviceMemory, estimate_peak_memory, fit_batch_size,
                         gpu_actions_available, largest_fitting_batch, measure_peak_memory,
                         needs_measuring, spill_warning)
from core.memory import terms as terms_module
from core.memory.estimate import CUDA_CONTEXT_BYTES
from core.memory.gpu import _largest_true
from core.memory.terms import MODES, TermsKey, cached_terms, studio_recipe
from core.memory.trace import CudaOpPolicy, trace_step

GIB = 2**30
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


def _config(*overrides: str) -> StudioConfig:
    return apply_overrides(StudioConfig(), list(overrides))


def _saved_bytes(module, make_batch, batch: int, size: int, precision: str) -> int:
    """Bytes autograd saves for backward in one real CPU training step, counted by
    saved_tensors_hooks: each storage once, parameters excluded. (All of them are saved by the end
    of the forward pass, so the backward pass is not run.)"""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    pixel_values, masks = make_batch(batch, size)
    dtype = {"bf16-mixed": torch.bfloat16}.get(precision)
    # CUDA's op policy: the estimate is for the GPU, and CPU autocast keeps layer norms in bf16.
    with CudaOpPolicy(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
        module.loss(module(pixel_values), masks)
    return sum(saved.values())


@pytest.mark.parametrize("variant", ["b0", "b1"])
def test_activations_per_image_match_a_real_cpu_step(variant):
    module, make_batch, _ = studio_recipe(ModelConfig(variant=variant))
    module.train()
    for precision in ("32", "bf16-mixed"):
        for size in (128, 160):
            counted = (_saved_bytes(module, make_batch, 3, size, precision)
                       - _saved_bytes(module, make_batch, 2, size, precision))
            cfg = _config(f"model.variant={variant}", f"data.image_size={size}",
                          f"train.precision={precision}")
            estimated = estimate_peak_memory(cfg, device=None).activation_bytes_per_image
            assert estimated == pytest.approx(counted, rel=0.05), (precision, size)


def test_fitted_peak_matches_a_traced_step_at_another_size():
    module, make_batch, loss = studio_recipe(ModelConfig(variant="b0"))
    terms = cached_terms(TermsKey("b0", "multilabel", 3, "32"))
    module.train()
    timeline = trace_step(module, lambda: make_batch(4, 160), loss, "32")
    module.zero_grad(set_to_none=True)
    traced = max(sum(own.values()) for own, _ in timeline.segments)
    predicted = sum(terms.peak(4, 160 * 160, accumulating=False).values())
    assert predicted == pytest.approx(traced, rel=0.005)


def test_estimate_is_linear_in_batch_and_in_pixels():
    totals = [estimate_peak_memory(_config("data.image_size=256", f"train.batch_size={b}"),
                                   device=None).total_bytes for b in range(4, 10)]
    steps = {b - a for a, b in zip(totals, totals[1:])}
    assert max(steps) - min(steps) <= 2  # rounding to whole bytes

    def activations(size):
        return estimate_peak_memory(_config(f"data.image_size={size}", "train.batch_size=4"),
                                    device=None).parts["activations"]

    per_pixel = [(activations(b) - activations(a)) / (b * b - a * a)
                 for a, b in ((256, 384), (384, 512))]
    assert per_pixel[0] == pytest.approx(per_pixel[1], rel=1e-4)
    estimate = estimate_peak_memory(_config(), device=None)
    assert sum(estimate.parts.values()) == estimate.total_bytes
    assert list(estimate.parts) == list(PARTS)


def test_gradient_accumulation_keeps_the_gradients_alive():
    alone = estimate_peak_memory(_config("model.variant=b2"), device=None)
    accumulating = estimate_peak_memory(_config("model.variant=b2",
                                                 "train.accumulate_grad_batches=4"), device=None)
    terms = cached_terms(TermsKey("b2", "multilabel", 3, "16"))
    assert accumulating.parts["gradients"] == terms.grad_bytes > alone.parts["gradients"]
    assert accumulating.total_bytes > alone.total_bytes


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_match_the_built_models(variant):
    from core.model.factory import build_segformer

    for mode in MODES:
        model_cfg = ModelConfig(variant=variant, mode=mode)
        with torch.device("meta"):
            model = build_segformer(model_cfg, warn_random=False)
        cfg = StudioConfig(model=model_cfg)
        assert estimate_peak_memory(cfg, device=None).params == sum(
            p.numel() for p in model.parameters())


def test_the_form_updates_quickly_from_the_shipped_cache():
    changes = [("model.variant", v) for v in VARIANTS] + [
        ("model.mode", "multiclass"), ("train.precision", "32"), ("train.precision", "16-mixed"),
        ("data.image_size", "512"), ("train.batch_size", "3"),
        ("train.accumulate_grad_batches", "4"), ("data.context", "0")]
    cfg = StudioConfig()
    for key, value in changes:
        cfg = apply_overrides(cfg, [f"{key}={value}"])
        assert not needs_measuring(cfg, device=None)
        started = time.perf_counter()
        estimate_peak_memory(cfg, device=None)
        largest_fitting_batch(cfg, 8 * GIB, device=None)
        assert time.perf_counter() - started < 0.2, key


def test_shipped_cache_covers_every_variant_mode_and_precision():
    data = json.loads(terms_module.SHIPPED_CACHE.read_text(encoding="utf-8"))
    assert {k: data[k] for k in ("schema", "torch", "transformers")} == {
        "schema": terms_module.SCHEMA, **terms_module.library_versions()}, \
        "resources/memory_terms.json is stale: run python -m core.memory --rebuild-cache"
    for variant in VARIANTS:
        for mode in MODES:
            for family in ("32", "16"):
                assert TermsKey(variant, mode, 3, family).text() in data["terms"]


def test_other_configs_are_measured_once_and_cached_in_the_user_folder():
    cfg = _config("model.num_classes=5", "data.image_size=128")
    assert needs_measuring(cfg, device=None)
    first = estimate_peak_memory(cfg, device=None)
    assert not needs_measuring(cfg, device=None)
    terms_module._loaded.clear()  # read back from disk, as a new process would
    assert estimate_peak_memory(cfg, device=None) == first
    saved = json.loads(terms_module.user_cache_path().read_text(encoding="utf-8"))
    assert "b0/multilabel/5/16" in saved["terms"]


def test_a_pretrained_folder_decides_the_architecture(tmp_path):
    from core.model.factory import segformer_config

    segformer_config(ModelConfig(variant="b2")).save_pretrained(tmp_path)
    cfg = _config("model.variant=b0", f"model.pretrained={tmp_path}")
    estimate = estimate_peak_memory(cfg, device=None)
    assert estimate.params == estimate_peak_memory(_config("model.variant=b2"), device=None).params
    assert any("b2" in note for note in estimate.notes)


def test_a_cache_from_other_library_versions_is_ignored(tmp_path):
    path = tmp_path / "memory_terms.json"
    entry = cached_terms(TermsKey("b0", "multilabel", 3, "32")).to_json()
    path.write_text(json.dumps({"schema": terms_module.SCHEMA, "torch": "1.0",
                                "transformers": "4.0", "terms": {"b0/multilabel/3/32": entry}}))
    assert terms_module._read(path) == {}


class _SegformerOps(torch.nn.Module):
    """A few channels through the op types SegFormer uses (CPU float16 kernels are too slow for
    the real model in a test)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.norm = torch.nn.LayerNorm(8)
        self.qkv = torch.nn.Linear(8, 24)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
        self.head = torch.nn.Sequential(torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                        torch.nn.Dropout(0.1), torch.nn.Conv2d(8, 3, 1))

    def forward(self, x):
        h = self.embed(x)
        b, c, height, width = h.shape
        tokens = self.norm(h.flatten(2).transpose(1, 2))
        q, k, v = self.qkv(tokens).unsqueeze(1).chunk(3, dim=-1)
        tokens = tokens + torch.nn.functional.scaled_dot_product_attention(q, k, v).squeeze(1)
        tokens = tokens + self.mlp(tokens)
        h = tokens.transpose(1, 2).reshape(b, c, height, width)
        return torch.nn.functional.interpolate(self.head(h), size=x.shape[-2:], mode="bilinear")


def test_16_and_bf16_mixed_precision_hold_the_same_bytes():
    from core.model.lightning_module import soft_dice_loss

    module = _SegformerOps().train()

    def make_batch():
        return torch.randn(2, 3, 32, 32), (torch.rand(2, 3, 32, 32) > 0.5).float()

    def loss(logits, masks):
        logits = logits.float()
        return (torch.nn.functional.binary_cross_entropy_with_logits(logits, masks)
                + soft_dice_loss(logits.sigmoid(), masks))

    timelines = []
    for precision in ("16-mixed", "bf16-mixed"):
        timelines.append(trace_step(module, make_batch, loss, precision))
        module.zero_grad(set_to_none=True)
    assert timelines[0] == timelines[1]
    assert timelines[0].saved_total > 0


# The ops of ATen's CUDA autocast float32 lists (autocast_mode.h) as they reach the dispatcher.
CUDA_FLOAT32_OPS = {"native_layer_norm", "native_group_norm", "upsample_bilinear2d",
                    "upsample_nearest2d", "_softmax", "_log_softmax", "sum", "exp", "log", "pow",
                    "rsqrt", "cumsum", "prod", "binary_cross_entropy_with_logits",
                    "nll_loss2d_forward", "nll_loss_forward", "softplus"}


@pytest.mark.parametrize("mode", MODES)
def test_cpu_steps_follow_cuda_autocast_policy(mode):
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class HalfInputs(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.found = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func._schema.name.split("::")[-1]
            if name in CUDA_FLOAT32_OPS and any(
                    t.dtype in (torch.float16, torch.bfloat16)
                    for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)):
                self.found.add(name)
            return func(*args, **(kwargs or {}))

    module, make_batch, loss = studio_recipe(ModelConfig(variant="b0", mode=mode))
    spy = HalfInputs()
    with spy, CudaOpPolicy():
        pixel_values, masks = make_batch(2, 64)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss(module(pixel_values), masks)
    assert spy.found == set()


def test_largest_fitting_batch_is_the_boundary():
    cfg = _config("model.variant=b1", "data.image_size=384")
    budget = 6 * GIB
    largest = largest_fitting_batch(cfg, budget, device=None)
    assert 1 < largest < 512

    def total(batch):
        return estimate_peak_memory(_config("model.variant=b1", "data.image_size=384",
                                            f"train.batch_size={batch}"), device=None).total_bytes

    assert total(largest) <= budget < total(largest + 1)
    assert largest_fitting_batch(cfg, CUDA_CONTEXT_BYTES, device=None) == 0


def test_fits_and_spill_warning_compare_with_free_memory():
    cfg = _config("model.variant=b2", "data.image_size=512", "train.batch_size=16")
    roomy = DeviceMemory("Test GPU", 80 * GIB, 79 * GIB, bf16=True)
    small = DeviceMemory("Test GPU", 8 * GIB, 2 * GIB, bf16=False)
    assert estimate_peak_memory(cfg, device=roomy).fits is True
    assert spill_warning(estimate_peak_memory(cfg, device=roomy)) is None
    tight = estimate_peak_memory(cfg, device=small)
    assert tight.fits is False and tight.precision == "16-mixed"
    assert "536.40" in spill_warning(tight)
    no_gpu = estimate_peak_memory(cfg, device=None)
    assert no_gpu.fits is None and no_gpu.precision == "bf16-mixed"
    assert any("bf16-mixed" in note for note in no_gpu.notes)


@NO_GPU
def test_gpu_actions_are_unavailable_without_a_gpu_and_say_why():
    available, reason = gpu_actions_available()
    assert not available and "GPU" in reason
    with pytest.raises(StudioError, match="GPU"):
        measure_peak_memory(StudioConfig())
    with pytest.raises(StudioError, match="GPU"):
        fit_batch_size(StudioConfig())


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_the_measuring_steps_run(precision):
    """The GPU's training steps, run here on the CPU (no GPU in CI): accumulation, autocast."""
    from core.memory.gpu import _ScratchTrainer

    cfg = _config("data.image_size=64", "train.batch_size=2", "train.accumulate_grad_batches=2")
    trainer = _ScratchTrainer(cfg, precision, device="cpu")
    before = [p.detach().clone() for p in trainer.module.parameters()]
    trainer._step(2, 2)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.module.parameters()))
    trainer.release_step()
    assert all(p.grad is None for p in trainer.module.parameters())


@pytest.mark.parametrize("threshold", [-1, 0, 1, 2, 5, 63, 64, 100, 511])
def test_fit_search_doubles_then_bisects(threshold):
    tried = []

    def fits(index):
        tried.append(index)
        return index <= threshold

    assert _largest_true(fits, 512) == threshold
    assert len(tried) <= 2 * 10


def test_cli_prints_json_and_the_largest_batch(capsys):
    assert run_cli(["estimate", "--json", "--set", "model.variant=b1", "--budget-gb", "6"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("total_bytes", "parts", "params", "device_total_bytes", "device_free_bytes",
                "fits", "largest_fitting_batch"):
        assert key in data
    assert set(data["parts"]) == set(PARTS)
    assert sum(data["parts"].values()) == data["total_bytes"]
    assert data["largest_fitting_batch"] == largest_fitting_batch(
        _config("model.variant=b1"), 6 * GIB, device=None)


def test_cli_prints_parts_for_people(capsys):
    assert run_cli(["estimate", "--set", "train.batch_size=4"]) == 0
    out = capsys.readouterr().out
    for label in ("weights", "gradients", "optimizer state", "activations", "workspace",
                  "CUDA context", "largest batch"):
        assert label in out


def test_cli_explains_bad_input(capsys):
    assert run_cli(["estimate", "--set", "model.num_classes=many"]) == 2
    assert capsys.readouterr().err.startswith("error: model.num_classes")
    assert run_cli(["estimate", "--budget-gb", "-1"]) == 2
    if not torch.cuda.is_available():
        assert run_cli(["estimate", "--measure"]) == 2
        assert "GPU" in capsys.readouterr().err


def test_ema_adds_the_averaged_copy_of_the_weights():
    """train.ema keeps Lightning's AveragedModel next to the model: one more fp32 copy."""
    from torch.optim.swa_utils import AveragedModel

    from core.model.factory import build_segformer

    plain = estimate_peak_memory(_config(), device=None)
    ema = estimate_peak_memory(_config("train.ema=true"), device=None)
    cfg = _config()
    model = build_segformer(cfg.model, warn_random=False)
    average = AveragedModel(model, use_buffers=True)
    average_bytes = sum(t.numel() * t.element_size()
                        for t in [*average.module.parameters(), *average.module.buffers()])
    assert ema.parts["weights"] - plain.parts["weights"] == pytest.approx(average_bytes, rel=0.01)
    assert ema.total_bytes - plain.total_bytes == ema.parts["weights"] - plain.parts["weights"]
    assert any("train.ema" in note for note in ema.notes)
    assert not any("train.ema" in note for note in plain.notes)
