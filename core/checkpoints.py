"""Checkpoints and exported models, read without trusting them and written so a crash cannot break them.

A checkpoint is a pickle, and unpickling a crafted file runs its code. Every load here passes
``weights_only=True`` (torch's restricted unpickler: tensors, containers, numbers, strings and the few
Lightning classes registered below), including Lightning's own loads (``Trainer.fit(ckpt_path=...,
weights_only=True)`` goes through ``AtomicCheckpointIO.load_checkpoint``). A file that is not a
checkpoint, is truncated, or needs anything else to unpickle becomes one ``StudioError``:
``FILE is not a SegFormer Studio checkpoint (…)``.

Writes go to ``<name>.partial``, are flushed to disk and renamed over the target, so a full disk, a
kill or a power cut mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from core import faults
from core.errors import StudioError
from core.model.variants import WEIGHT_FILES

_SAFE_GLOBALS_ADDED = False


def _allow_lightning_globals() -> None:
    """Register the plain classes Lightning puts into checkpoints with torch's safe unpickler."""
    global _SAFE_GLOBALS_ADDED
    if _SAFE_GLOBALS_ADDED:
        return
    from pytorch_lightning.utilities.parsing import AttributeDict

    torch.serialization.add_safe_globals([AttributeDict])
    _SAFE_GLOBALS_ADDED = True


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a training checkpoint safely; ``StudioError`` naming the file if it is not one of ours."""
    _allow_lightning_globals()
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"checkpoint '{path}' does not exist")
    try:
        with warnings.catch_warnings():  # torch's notes on foreign pickle protocols: we refuse them
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text:
            name = text.split("GLOBAL", 1)[-1].split()[0] if "GLOBAL" in text else ""
            raise StudioError(f"'{path}' is not a SegFormer Studio checkpoint (it holds objects "
                              f"other than weights{', such as ' + name if name else ''}); it was "
                              "not loaded, and nothing in it was run") from None
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if text else ""
        raise StudioError(f"'{path}' is not a SegFormer Studio checkpoint (damaged or truncated: "
                          f"{detail[:160]})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, struct.error,
            KeyError, AttributeError, TypeError) as exc:
        raise StudioError(f"'{path}' is not a SegFormer Studio checkpoint (damaged or truncated: "
                          f"{type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise StudioError(f"'{path}' is not a SegFormer Studio checkpoint (no model weights in it)")
    return checkpoint


def checkpoint_config(checkpoint: dict, path: Path) -> dict:
    """The settings a checkpoint was trained with (``StudioConfig.to_dict()`` form)."""
    config = checkpoint.get("studio_config")
    if config is None:
        config = (checkpoint.get("hyper_parameters") or {}).get("config")
    if not isinstance(config, dict):
        raise StudioError(f"'{path}' is not a SegFormer Studio checkpoint (it has no settings)")
    return dict(config)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, with atomic writes and safe (``weights_only``) reads;
    ``on_load`` may adjust a checkpoint as it is read (a resume on another number of devices)."""

    def __init__(self, on_load=None):
        super().__init__()
        self.on_load = on_load

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            with open(tmp, "rb+") as fh:  # on disk before the rename makes it the checkpoint
                os.fsync(fh.fileno())
            faults.point("checkpoint-partial")
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StudioError(f"could not write checkpoint '{path}': {exc.strerror or exc}. The "
                              "previous checkpoint is intact; free disk space and resume") from None

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        checkpoint = load_checkpoint(path, map_location if map_location is not None else "cpu")
        return self.on_load(checkpoint) if self.on_load is not None else checkpoint


# -- exported models (save_pretrained folders) -----------------------------------------------------
def pretrained_folder_problem(folder: Path, need_studio_meta: bool = True) -> str | None:
    """Why ``folder`` is not a usable ``save_pretrained`` model (config.json, weights and, with
    ``need_studio_meta``, studio.json), or None. Reads headers only."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict) or "hidden_sizes" not in config:
            return f"'{folder / 'config.json'}' is not a SegFormer config"
    except FileNotFoundError:
        return f"'{folder}' has no config.json"
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"'{folder / 'config.json'}' cannot be read ({type(exc).__name__})"
    safetensors = folder / "model.safetensors"
    if safetensors.is_file():
        problem = safetensors_problem(safetensors)
        if problem:
            return problem
    elif not (folder / "pytorch_model.bin").is_file():
        return f"'{folder}' has no weights (model.safetensors)"
    if need_studio_meta:
        try:
            meta = json.loads((folder / "studio.json").read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except FileNotFoundError:
            return f"'{folder}' has no studio.json (the preprocessing the model was trained with)"
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            return f"'{folder / 'studio.json'}' cannot be read ({type(exc).__name__})"
    return None


def safetensors_problem(path: Path) -> str | None:
    """Check a ``.safetensors`` file's header and that the file holds all the bytes it declares."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"'{path}' is truncated"
            length = struct.unpack("<Q", head)[0]
            if length > min(size - 8, 100 * 2**20):
                return f"'{path}' is truncated or not a safetensors file"
            header = json.loads(fh.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"'{path}' cannot be read ({type(exc).__name__})"
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry]
    if not ends or 8 + length + max(ends) > size:
        return f"'{path}' is truncated ({size} bytes, the header declares more)"
    return None
