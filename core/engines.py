"""ONNX export of a trained model, and the inference engines that run it.

``export_onnx`` writes the SegFormer of a run (or checkpoint, or ``model/`` folder) as an ONNX graph:

* input ``pixel_values``: float32 ``(batch, 3, S, S)``, the batch axis dynamic; the normalised image
  exactly as the app feeds the model (see the ``segformer_studio`` metadata below);
* output ``logits``: float32 ``(batch, C, S, S)`` at the input's size; ``C`` is 3 (multilabel: a
  sigmoid per organ, threshold 0.5) or 4 (multiclass: softmax, channel 0 background).

The preprocessing is recorded as JSON in the model's metadata (``metadata_props`` key
``segformer_studio``): the image size, the 2.5D context (channels are the slices ``i-k, i, i+k`` of the
same scan), the per-scan intensity normalisation (the 0.5 and 99.5 percentiles of the whole scan map to
0 and 255, uint8; then ``/255``, ``(x - mean) / std`` per channel), the resize (bilinear, pixel centres
on pixel centres) and the organs in output-channel order.

The graph is made by the TorchScript exporter of ``torch.onnx`` (``dynamo=False``): it needs only the
``onnx`` package and no network, and exports B0 in seconds; the dynamo exporter (which needs
``onnxscript``) is the fallback where the first is gone.

Engines: ``torch`` (the PyTorch model, eager) and ``onnxruntime`` (the exported graph on the CPU
execution provider). ``fastest_engine()`` says which to use (see benchmarks/RESULTS.md 4b: torch).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.data import ORGANS
from core.errors import StudioError

log = logging.getLogger(__name__)

ENGINES = ("torch", "onnxruntime")
METADATA_KEY = "segformer_studio"
ONNX_FILE = "model.onnx"
"""The exported graph's name inside a run folder (``predict --engine onnxruntime --run``)."""
OPSET = 17


def export_onnx(source: str | Path, out: str | Path | None = None) -> Path:
    """Export the model of ``source`` (a run folder, a ``.ckpt`` or a run's ``model/``) to ``out``
    (default ``<run>/model.onnx``) and check the file with ``onnx.checker``; returns the path. The
    file is written beside ``out`` and renamed into place when complete."""
    from core.predict import load_model

    model = load_model(source, "cpu")
    if out is None:
        run_dir = Path(source) if Path(source).is_dir() else Path(source).parent
        if run_dir.name == "checkpoints" or (run_dir / "studio.json").is_file():
            run_dir = run_dir.parent
        out = run_dir / ONNX_FILE
    out = Path(out)
    module = model.module.float().eval().to(memory_format=torch.contiguous_format)
    size = model.image_size
    example = torch.zeros(2, 3, size, size)
    partial = out.with_name(out.name + ".partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _torch_export(module, example, partial)
        _add_metadata(partial, metadata(model.config, module.mode, model.source,
                                        model.postprocess))
        os.replace(partial, out)
    except OSError as exc:
        raise StudioError(f"cannot write '{out}': {exc.strerror or exc}; check that the folder is "
                          "writable and has free space") from None
    finally:
        partial.unlink(missing_ok=True)
    return out


def probabilities(logits: torch.Tensor, mode: str) -> torch.Tensor:
    """Organ probabilities ``(B, 3, H, W)`` from logits, as the Predictor computes them."""
    return logits.float().softmax(1)[:, 1:] if mode == "multiclass" else logits.float().sigmoid()


def verify_onnx(source: str | Path, path: str | Path, batch: int = 3, seed: int = 0) -> float:
    """The largest absolute difference between the organ probabilities of the PyTorch model of
    ``source`` (float32, CPU) and of the exported ``path`` under onnxruntime, on ``batch`` random
    images (a batch size other than the export's, so the dynamic axis is exercised)."""
    from core.predict import load_model

    model = load_model(source, "cpu")
    module = model.module.float().eval()
    onnx_module = OnnxModule(Path(path))
    size = model.image_size
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        reference = probabilities(module(module.pixel_values(images)), module.mode)
    exported = probabilities(onnx_module(onnx_module.pixel_values(images)), onnx_module.mode)
    return float((reference - exported).abs().max())


def _torch_export(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    names = {"input_names": ["pixel_values"], "output_names": ["logits"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings: the image size is a constant, on purpose
        try:
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                              dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                              **names)
        except (TypeError, NotImplementedError, RuntimeError) as exc:  # TorchScript exporter gone
            log.info("TorchScript ONNX exporter failed (%s); using the dynamo exporter", exc)
            batch = torch.export.Dim("batch", min=1, max=4096)
            try:
                torch.onnx.export(module, (example,), str(path), dynamo=True, external_data=False,
                                  dynamic_shapes=({0: batch},), **names)
            except ImportError:
                raise StudioError(f"the ONNX export failed ({str(exc)[:200]}); the other exporter "
                                  "of torch.onnx needs onnxscript: pip install onnxscript") from None


def metadata(config, mode: str, source, postprocess=None) -> dict:
    """The preprocessing and output convention, as recorded in the ONNX file (with the model's
    tuned post-processing, so a file used on its own predicts as its run does)."""
    from core.data.augment import MEAN, STD
    from core.data.cache import HIGH_PERCENTILE, LOW_PERCENTILE

    data = config.data
    return {
        "format": 1, "source": str(source), "variant": config.model.variant, "mode": mode,
        "organs": list(ORGANS), "image_size": data.image_size, "context": data.context,
        "input": "pixel_values float32 (batch, 3, S, S): channels = slices i-context, i, i+context "
                 "of one scan (clamped at its ends)",
        "intensity": {"per": "scan", "low_percentile": LOW_PERCENTILE,
                      "high_percentile": HIGH_PERCENTILE, "to": "uint8 0..255",
                      "resize": "INTER_AREA when shrinking, INTER_LINEAR when growing"},
        "scale": 1 / 255, "mean": list(MEAN), "std": list(STD),
        "output": "logits float32 (batch, C, S, S)",
        "activation": "softmax over 4 channels, 0 = background" if mode == "multiclass"
        else "sigmoid per organ, threshold 0.5 unless postprocess says otherwise",
        "postprocess": postprocess.to_dict() if postprocess is not None else None,
    }


def _add_metadata(path: Path, meta: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    model.producer_name = "SegFormer Studio"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict:
    """The ``segformer_studio`` metadata of an exported file; ``StudioError`` for another file."""
    session = _session(Path(path))
    return _metadata_of(session, Path(path))


def _metadata_of(session, path: Path) -> dict:
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if not raw:
        raise StudioError(f"'{path}' is not a model exported by SegFormer Studio (no "
                          f"'{METADATA_KEY}' metadata); export one with main.py export-onnx")
    try:
        return json.loads(raw)
    except ValueError:
        raise StudioError(f"'{path}': its '{METADATA_KEY}' metadata is not JSON") from None


def _session(path: Path, spinning: bool = False):
    try:
        import onnxruntime as ort
    except ImportError:
        raise StudioError("the onnxruntime engine needs the onnxruntime package; "
                          "pip install onnxruntime") from None
    if not path.is_file():
        raise StudioError(f"ONNX model '{path}' does not exist; export one with main.py export-onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle worker threads sleep instead of spinning: on a CPU shared with other work (the app's
    # own GUI thread, a training run) spinning threads steal the cores the model needs.
    spin = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for a damaged file
        raise StudioError(f"cannot load ONNX model '{path}' ({type(exc).__name__}: "
                          f"{str(exc)[:200]})") from None


class OnnxModule:
    """An exported model behind the interface ``core.predict.Predictor`` uses of a module:
    ``pixel_values(images)``, ``module(x) -> logits`` (torch tensors) and ``mode``."""

    def __init__(self, path: Path, spinning: bool = False):
        from core.data.augment import MEAN, STD

        self.path = path
        self.session = _session(path, spinning)
        self.meta = _metadata_of(self.session, path)
        self.mode = self.meta["mode"]
        self.mean = torch.tensor(self.meta.get("mean", MEAN)).view(1, -1, 1, 1)
        self.std = torch.tensor(self.meta.get("std", STD)).view(1, -1, 1, 1)
        self._input = self.session.get_inputs()[0].name

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        return (images - self.mean) / self.std

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(pixel_values.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run(None, {self._input: x})[0])


def load_onnx_model(source: str | Path):
    """A ``core.predict.LoadedModel`` that runs with onnxruntime. ``source`` is an exported ``.onnx``
    file, or a run folder: its ``model.onnx``, exported first when missing or older than the run's
    best checkpoint."""
    from core.config import apply_overrides, StudioConfig
    from core.devices import Placement
    from core.predict import LoadedModel
    from core.runs import RunFolder

    source = Path(source)
    if source.is_dir():
        run = RunFolder(source)
        best = run.best_checkpoint() if run.is_run() else None
        path = source / ONNX_FILE
        if best is None and not path.is_file():
            raise StudioError(f"'{source}' has no checkpoints to export; train a model first, or "
                              "give an exported .onnx file")
        if best is not None and (not path.is_file() or
                                 path.stat().st_mtime_ns < best.stat().st_mtime_ns):
            log.info("exporting %s to %s", best, path)
            export_onnx(source, path)
    else:
        path = source
    module = OnnxModule(path)
    meta = module.meta
    config = apply_overrides(StudioConfig(), [
        f"data.image_size={int(meta['image_size'])}", f"data.context={int(meta['context'])}",
        f"model.mode={meta['mode']}", f"model.variant={meta['variant']}"])
    from core.predict import tuned_postprocess

    if source.is_dir():
        tuned = tuned_postprocess(source)
    else:
        from core.postprocess import PostProcess

        recorded = meta.get("postprocess")
        tuned = PostProcess.from_dict(recorded) if recorded else None
    return LoadedModel(module, config, Placement("cpu", "32"), path, tuned)


@dataclass(frozen=True)
class EngineChoice:
    name: str
    reason: str


def available_engines() -> list[str]:
    """The engines that can run here (``torch`` always; ``onnxruntime`` when installed)."""
    import importlib.util

    return [e for e in ENGINES if e == "torch" or importlib.util.find_spec(e) is not None]


def fastest_engine(device: str = "auto") -> EngineChoice:
    """The engine to predict with here. Measured (benchmarks/RESULTS.md 4b): on a quiet 2-core CPU
    torch eager is as fast as onnxruntime or faster (13.7 s vs 14.8 s per 144-slice case-day at
    batch 4); onnxruntime was faster only while another process loaded the cores. So: torch."""
    return EngineChoice("torch", "torch eager measured fastest here (benchmarks/RESULTS.md 4b)")


def load_for_engine(source: str | Path, device: str = "auto", engine: str = "torch"):
    """A ``LoadedModel`` for ``core.predict.Predictor`` on ``engine`` (``torch``, ``onnxruntime`` or
    ``auto`` = ``fastest_engine(device)``). An ``.onnx`` file always runs with onnxruntime; for
    onnxruntime a run folder (or its ``model/``) runs its ``model.onnx``, exported when needed."""
    from core.predict import load_model
    from core.runs import RunFolder

    source = Path(source)
    if engine not in ENGINES + ("auto",):
        raise StudioError(f"engine '{engine}': choose one of {', '.join(ENGINES)} or auto")
    if source.suffix.lower() == ".onnx":
        if device == "gpu":
            raise StudioError(f"'{source}' is an ONNX model; it runs on the CPU (onnxruntime); "
                              "use --device cpu or auto, or give the run folder for the GPU")
        return load_onnx_model(source)
    if engine == "auto":
        engine = fastest_engine(device).name
    from core.runs import is_group

    if engine == "torch" or is_group(source):  # a group's ensemble averages torch models
        if engine == "onnxruntime":
            log.info("%s is a fold group: its ensemble runs with torch", source)
        return load_model(source, device)
    if device == "gpu":
        raise StudioError("--engine onnxruntime runs on the CPU; use --engine torch for the GPU")
    if source.is_dir() and not RunFolder(source).is_run() and RunFolder(source.parent).is_run():
        source = source.parent  # a run's model/ folder: the run's model.onnx
    if not (source.is_dir() and RunFolder(source).is_run()):
        raise StudioError(f"--engine onnxruntime needs a run folder or an exported .onnx file, not "
                          f"'{source}' (export one with main.py export-onnx --checkpoint {source} "
                          "--out model.onnx)")
    return load_onnx_model(source)
