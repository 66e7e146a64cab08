"""Pretrained SegFormer (MiT) encoders already on this machine, and the one way to fetch another.

Two places are searched:

- the Hugging Face cache (``huggingface_hub.constants.HF_HUB_CACHE``: ``$HF_HUB_CACHE``, else
  ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``; on Windows
  ``%USERPROFILE%\\.cache\\huggingface\\hub``), whose snapshot folders
  (``models--nvidia--mit-b2/snapshots/<commit>/``) are used in place;
- ``pretrained/`` in the user data folder, one sub-folder per checkpoint; ``nvidia--mit-b2`` is the
  Hugging Face model ``nvidia/mit-b2``, as in the cache's own naming.

A folder counts when its ``config.json`` is a SegFormer of one of the MiT-B0…B5 shapes and a
weights file sits next to it. Discovery reads those small files only: no torch, no network.

Nothing is downloaded except by ``download_pretrained``, on the user's explicit request
(``main.py pretrained download``, the settings form's Download… button). It fetches config.json
and one weights file into a hidden folder next to the target and renames it into place at the
end, so Ctrl+C, Cancel or a dropped connection leave no half checkpoint behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.errors import CancelledError, StudioError
from core.events import Progress
from core.model.variants import WEIGHT_FILES, variant_of
from core.paths import studio_home

_CONFIG_FILES = ("config.json", "preprocessor_config.json")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# How long a cancelled download may take to notice (it checks between chunks of ~10 MB).
_STOP_WAIT_S = 10.0
HF_CACHE = "Hugging Face cache"
STUDIO_FOLDER = "pretrained folder"


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """A usable pretrained folder: ``name`` (``nvidia/mit-b2``), ``folder`` (config.json +
    weights: the value for ``model.pretrained``), ``variant`` (``b2``) and ``source`` (where it
    was found)."""

    name: str
    folder: Path
    variant: str
    source: str

    @property
    def label(self) -> str:
        return f"{self.name} ({self.variant})"


def pretrained_dir() -> Path:
    """``pretrained/`` in the user data folder (not created here)."""
    return studio_home() / "pretrained"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub resolved it from the environment."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def folder_name(repo_id: str) -> str:
    """``nvidia/mit-b2`` → ``nvidia--mit-b2`` (the Hugging Face cache's own convention)."""
    return repo_id.replace("/", "--")


def download_target(repo_id: str) -> Path:
    """Where ``download_pretrained`` puts ``repo_id``; ``StudioError`` when it is no model id."""
    if not _REPO_ID.fullmatch(repo_id):
        raise StudioError(f"'{repo_id}' is not a Hugging Face model id; write it as ORG/NAME, "
                          "e.g. nvidia/mit-b0")
    return pretrained_dir() / folder_name(repo_id)


def find_pretrained() -> list[PretrainedCheckpoint]:
    """Every usable checkpoint in the user's ``pretrained/`` folder and the Hugging Face cache, by
    name; a model found in both is listed once, from ``pretrained/``."""
    found = {}
    for checkpoint in [*_in_pretrained_dir(), *_in_hf_cache()]:
        found.setdefault(checkpoint.name, checkpoint)
    return sorted(found.values(), key=lambda c: c.name.lower())


def unusable_in_pretrained_dir() -> list[tuple[Path, str]]:
    """Sub-folders of ``pretrained/`` that are not usable checkpoints, each with the reason (a copy
    by hand that misses a file shows up here, not silently nowhere)."""
    return [(folder, problem) for folder, _, problem in _scan_pretrained_dir() if problem]


def checkpoint_problem(folder: Path) -> tuple[str | None, str | None]:
    """(variant, None) for a usable checkpoint folder, or (None, why not). Reads config.json
    only."""
    variant, problem = _config_variant(folder)
    if variant and not any((Path(folder) / name).is_file() for name in WEIGHT_FILES):
        return None, f"no weights ({' or '.join(WEIGHT_FILES)})"
    return variant, problem


def _config_variant(folder: Path) -> tuple[str | None, str | None]:
    """(variant, None) when ``folder/config.json`` is a SegFormer of a MiT shape, or (None, why
    not). The model_type counts too: PVT-v2 encoders share MiT's widths and depths."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "no config.json"
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return None, f"config.json cannot be read ({type(exc).__name__})"
    if not isinstance(config, dict) or config.get("model_type") != "segformer":
        kind = config.get("model_type") if isinstance(config, dict) else None
        what = f"a {kind} model" if kind else "no model"
        return None, f"config.json describes {what}, not SegFormer"
    variant = variant_of(config)
    if variant is None:
        return None, (f"config.json has an encoder of depths {config.get('depths')}, "
                      "not one of MiT-B0…B5")
    return variant, None


def _scan_pretrained_dir() -> list[tuple[Path, str | None, str | None]]:
    root = pretrained_dir()
    if not root.is_dir():
        return []
    entries = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():  # hidden: a download in progress
            continue
        entries.append((folder, *checkpoint_problem(folder)))
    return entries


def _in_pretrained_dir() -> list[PretrainedCheckpoint]:
    return [PretrainedCheckpoint(folder.name.replace("--", "/", 1), folder, variant, STUDIO_FOLDER)
            for folder, variant, _ in _scan_pretrained_dir() if variant]


def _in_hf_cache() -> list[PretrainedCheckpoint]:
    """The snapshot ``refs/main`` names, else the newest, of each model in the cache. Walked here
    rather than with ``huggingface_hub.scan_cache_dir``, which stats every file of every repo
    (1.2 s on a cache of 16,000 files; this reads a few small files per model)."""
    found = []
    for repo in sorted(hf_cache_dir().glob("models--*")):
        try:
            main = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
        except OSError:
            main = None
        snapshots = [folder for folder in (repo / "snapshots").glob("*") if folder.is_dir()]
        for snapshot in sorted(snapshots, key=lambda folder: (folder.name == main,
                                                              folder.stat().st_mtime),
                               reverse=True):
            variant, _ = checkpoint_problem(snapshot)
            if variant:
                name = repo.name.removeprefix("models--").replace("--", "/")
                found.append(PretrainedCheckpoint(name, snapshot, variant, HF_CACHE))
                break
    return found


# -- download ------------------------------------------------------------------------------------
def download_pretrained(repo_id: str, progress: Callable[[Progress], None] | None = None,
                        cancel: Callable[[], bool] | None = None) -> PretrainedCheckpoint:
    """Fetch ``repo_id``'s config.json and weights into ``pretrained/<org>--<name>/``.

    ``progress`` gets ``Progress("download", bytes done, bytes total, "<repo>: <file>")`` from the
    download's threads; ``cancel()`` returning True stops it with ``CancelledError``. A checkpoint
    already there is returned as it is. Raises ``StudioError`` with the steps to do it by hand when
    the Hub cannot be reached, the repo does not exist or is not a SegFormer MiT encoder.
    """
    repo_id = repo_id.strip()
    target = download_target(repo_id)
    if target.exists():
        variant, problem = checkpoint_problem(target)
        if variant:
            return PretrainedCheckpoint(repo_id, target, variant, STUDIO_FOLDER)
        raise StudioError(f"'{target}' exists but is not a usable checkpoint ({problem}); "
                          "complete it by hand or delete it, then download again")
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by a process that was killed
    try:
        variant = _run_stoppable(lambda stop: _fetch(repo_id, partial, target, progress, stop),
                                 cancel, repo_id)
        # huggingface_hub's bookkeeping for resuming into local_dir; the checkpoint is complete.
        shutil.rmtree(partial / ".cache", ignore_errors=True)
        os.replace(partial, target)
    except OSError as exc:
        raise StudioError(f"cannot write the download of {repo_id} into '{target.parent}': "
                          f"{exc.strerror or exc}; free disk space or choose another data folder "
                          "(--home)") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return PretrainedCheckpoint(repo_id, target, variant, STUDIO_FOLDER)


def manual_steps(repo_id: str) -> str:
    """How to get ``repo_id`` without this program's download (one sentence)."""
    from huggingface_hub import constants

    return (f"to get it by hand, open {constants.ENDPOINT}/{repo_id}/tree/main, download "
            "config.json and model.safetensors (or pytorch_model.bin where there is no "
            f"model.safetensors) and copy them into '{download_target(repo_id)}'; 'main.py "
            "pretrained list' then shows it")


def _run_stoppable(work: Callable[[threading.Event], str], cancel: Callable[[], bool] | None,
                   repo_id: str) -> str:
    """Run ``work(stop)`` on a thread and wait, so Ctrl+C (or ``cancel()``) can set ``stop`` and
    the download's threads end at their next chunk, instead of finishing their files first."""
    stop = threading.Event()
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = work(stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"download {repo_id}", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
            if cancel is not None and cancel() and thread.is_alive():
                stop.set()
                thread.join(_STOP_WAIT_S)
                raise CancelledError(f"download of {repo_id} cancelled")
    except KeyboardInterrupt:
        stop.set()
        thread.join(_STOP_WAIT_S)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _fetch(repo_id: str, folder: Path, target: Path, progress, stop: threading.Event) -> str:
    """Download into ``folder`` (created once the Hub has answered): the file list first,
    config.json (checked: SegFormer, a MiT shape) before the weights, so a wrong repo costs
    kilobytes. Returns the variant."""
    from huggingface_hub import HfApi

    with _hub_errors(repo_id):
        info = HfApi().model_info(repo_id, files_metadata=True)
    sizes = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or ()}
    weights = next((name for name in WEIGHT_FILES if name in sizes), None)
    if "config.json" not in sizes or weights is None:
        missing = "config.json" if weights else " or ".join(WEIGHT_FILES)
        raise StudioError(f"{repo_id} has no {missing}: it is not a transformers SegFormer "
                          "checkpoint; pick a SegFormer/MiT model, e.g. nvidia/mit-b0")
    configs = [name for name in _CONFIG_FILES if name in sizes]
    folder.mkdir(parents=True)
    total = sum(sizes[name] for name in [*configs, weights])
    reporter = _ByteReporter(repo_id, total, progress, stop)
    reporter.download(folder, configs, done_before=0)
    _, problem = _config_variant(folder)
    if problem:
        raise StudioError(f"{repo_id} is not a SegFormer MiT-B0…B5 encoder: {problem}; pick e.g. "
                          "nvidia/mit-b0")
    reporter.download(folder, [weights], done_before=sum(sizes[name] for name in configs))
    variant, problem = checkpoint_problem(folder)
    if problem:
        raise StudioError(f"the download of {repo_id} into '{target}' is incomplete ({problem}); "
                          f"download again, or {manual_steps(repo_id)}")
    return variant


class _ByteReporter:
    """Turns huggingface_hub's progress bars into ``Progress`` events over the whole download,
    and stops the download's threads (at their next chunk) once ``stop`` is set."""

    def __init__(self, repo_id: str, total: int, progress, stop: threading.Event):
        self.repo_id, self.total, self.progress, self.stop = repo_id, total, progress, stop

    def download(self, folder: Path, files: list[str], done_before: int) -> None:
        from huggingface_hub import snapshot_download

        if self.stop.is_set():
            raise CancelledError(f"download of {self.repo_id} cancelled")
        message = f"{self.repo_id}: {', '.join(files)}"
        if self.progress:
            self.progress(Progress("download", done_before, self.total, message))
        with _hub_errors(self.repo_id):
            snapshot_download(self.repo_id, local_dir=folder, allow_patterns=files,
                              tqdm_class=self._bar_class(done_before, message))

    def _bar_class(self, done_before: int, message: str):
        from tqdm.auto import tqdm

        reporter, byte_bars = self, []

        class Bar(tqdm):
            """A silent bar. huggingface_hub feeds one bar per byte count it keeps (received,
            written); the furthest of them is how far the download is."""

            def __init__(self, *args, **kwargs):
                super().__init__(*args, **{**kwargs, "disable": True})
                self.counts_bytes = kwargs.get("unit") == "B"
                if self.counts_bytes:
                    byte_bars.append(self)

            def update(self, n=1):
                if reporter.stop.is_set():
                    raise CancelledError(f"download of {reporter.repo_id} cancelled")
                self.n += n or 0
                if reporter.progress and self.counts_bytes:
                    done = done_before + max(bar.n for bar in byte_bars)
                    reporter.progress(Progress("download", min(done, reporter.total),
                                               reporter.total, message))

        return Bar


@contextmanager
def _hub_errors(repo_id: str):
    """Turn huggingface_hub's and the network's exceptions into one ``StudioError`` naming the
    repo and the steps to get it by hand; anything else (a full disk, a bug) passes unchanged."""
    try:
        yield
    except StudioError:
        raise
    except Exception as exc:
        reason = _why_not_downloadable(repo_id, exc)
        if reason is None:
            raise
        raise StudioError(f"cannot download {repo_id}: {reason}; {manual_steps(repo_id)}") from None


def _why_not_downloadable(repo_id: str, exc: Exception) -> str | None:
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    if isinstance(exc, GatedRepoError):
        return (f"{repo_id} is gated: accept its terms on {constants.ENDPOINT}/{repo_id} and "
                "log in with 'hf auth login'")
    if isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError)):
        return (f"{repo_id} was not found on {constants.ENDPOINT} (check the spelling, e.g. "
                "nvidia/mit-b0; a private model needs 'hf auth login')")
    # The HTTP client's own errors (httpx, or requests in older huggingface_hub) are not OSErrors.
    network = (HfHubHTTPError, LocalEntryNotFoundError, ConnectionError, TimeoutError)
    if not (isinstance(exc, network)
            or type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3")):
        return None
    if constants.HF_HUB_OFFLINE:
        return "downloads are switched off (HF_HUB_OFFLINE is set)"
    return f"{constants.ENDPOINT} cannot be reached ({type(exc).__name__})"
