"""Pretrained encoders a user can get: found in the Hugging Face cache and the data folder's
``pretrained/``, listed by ``main.py pretrained list``, fetched by ``pretrained download`` (whole or
not at all), and loaded through ``model.pretrained``. No test reaches the network: the Hub is
switched off (``HF_HUB_OFFLINE``, a dead endpoint) or its two calls are replaced by fakes."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import core.pretrained as pretrained
from core.errors import CancelledError, StudioError
from main import main
from tests.conftest import REPO

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _dead_endpoint(monkeypatch):
    """Should a call slip past the fakes, it goes nowhere."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")


@pytest.fixture(scope="session")
def b0_weights(tmp_path_factory) -> Path:
    """A real MiT-B0 SegFormer in save_pretrained form (config.json + model.safetensors)."""
    from core.config import ModelConfig
    from core.model.factory import build_segformer

    folder = tmp_path_factory.mktemp("mit b0") / "mit-b0"
    build_segformer(ModelConfig(variant="b0"), warn_random=False).save_pretrained(folder)
    return folder


def add_to_hf_cache(cache: Path, repo_id: str, files: dict[str, Path | str],
                    repo_type: str = "model") -> Path:
    """Lay ``files`` out as huggingface_hub does: content-named blobs, the snapshot of one commit
    linking to them, and ``refs/main`` naming that commit. Returns the snapshot folder."""
    from huggingface_hub.file_download import repo_folder_name

    repo = cache / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content.encode()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        try:
            os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
        except OSError:  # Windows without symlink rights: huggingface_hub copies instead
            shutil.copyfile(blob, snapshot / name)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path, monkeypatch, b0_weights) -> Path:
    """A Hugging Face cache holding nvidia/mit-b0, a BERT model and a dataset (neither counts).
    huggingface_hub reads $HF_HUB_CACHE once, at import: the resolved constant is what we move."""
    from huggingface_hub import constants

    cache = tmp_path / "hf cache" / "hub"
    add_to_hf_cache(cache, "nvidia/mit-b0", {name: b0_weights / name
                                             for name in ("config.json", "model.safetensors")})
    add_to_hf_cache(cache, "google/bert-tiny", {"config.json": json.dumps(
        {"model_type": "bert", "hidden_size": 128}), "model.safetensors": "x"})
    add_to_hf_cache(cache, "someone/scans", {"config.json": "{}"}, repo_type="dataset")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A user data folder of this test's own."""
    folder = tmp_path / "studio home"
    monkeypatch.setenv("SEGFORMER_STUDIO_HOME", str(folder))
    return folder


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """The Hub as on a machine without network: offline mode, a dead endpoint, an empty cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty cache"))


class FakeHub:
    """Stands in for ``HfApi.model_info`` and ``snapshot_download``: serves ``files`` (name → local
    file), copying what ``allow_patterns`` asks for into ``local_dir`` in chunks through the
    caller's progress bar class, as huggingface_hub does. ``calls`` records the patterns asked."""

    def __init__(self, files: dict[str, Path], chunk: int = 1 << 20, pause: float = 0.0,
                 fail_after: int | None = None):
        self.files, self.chunk, self.pause, self.fail_after = files, chunk, pause, fail_after
        self.calls: list[list[str]] = []
        self.stopped = False

    def install(self, monkeypatch) -> "FakeHub":
        import huggingface_hub

        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", self.model_info)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)
        return self

    def model_info(self, repo_id, files_metadata=False, **_kw):
        assert files_metadata
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=name, size=path.stat().st_size)
                                         for name, path in self.files.items()])

    def snapshot_download(self, repo_id, *, local_dir, allow_patterns, tqdm_class, **_kw):
        self.calls.append(list(allow_patterns))
        wanted = [n for n in self.files if any(fnmatch.fnmatch(n, p) for p in allow_patterns)]
        sizes = [self.files[name].stat().st_size for name in wanted]
        received = tqdm_class(desc="Downloading bytes", total=sum(sizes), unit="B")
        written = tqdm_class(desc="Reconstructing", total=sum(sizes), unit="B")
        files_bar = tqdm_class(desc=f"Fetching {len(wanted)} files", total=len(wanted))
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)
        sent = 0
        try:
            for name in wanted:
                data = self.files[name].read_bytes()
                with open(Path(local_dir) / name, "wb") as fh:
                    for start in range(0, len(data), self.chunk):
                        if self.fail_after is not None and sent >= self.fail_after:
                            raise ConnectionError("connection reset by peer")
                        fh.write(data[start:start + self.chunk])
                        sent += len(data[start:start + self.chunk])
                        received.update(min(self.chunk, len(data) - start))
                        written.update(min(self.chunk, len(data) - start))
                        time.sleep(self.pause)
                files_bar.update(1)
        except CancelledError:
            self.stopped = True
            raise
        return str(local_dir)


def _code(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exit_:
        return exit_.code


# -- discovery -----------------------------------------------------------------------------------
def test_a_checkpoint_in_the_hf_cache_is_found_with_its_variant(hf_cache, home):
    start = time.perf_counter()
    found = pretrained.find_pretrained()
    assert time.perf_counter() - start < 1.0
    snapshot = hf_cache / "models--nvidia--mit-b0" / "snapshots" / COMMIT
    assert found == [pretrained.PretrainedCheckpoint("nvidia/mit-b0", snapshot, "b0",
                                                     pretrained.HF_CACHE)]
    assert found[0].label == "nvidia/mit-b0 (b0)"


def test_the_pretrained_folder_is_found_and_a_half_copy_is_explained(hf_cache, home, b0_weights):
    shutil.copytree(b0_weights, home / "pretrained" / "nvidia--mit-b0")  # also in the cache
    shutil.copytree(b0_weights, home / "pretrained" / "my encoder")
    (home / "pretrained" / "half copy").mkdir()
    shutil.copy(b0_weights / "config.json", home / "pretrained" / "half copy")
    found = pretrained.find_pretrained()
    assert [(c.name, c.variant, c.source) for c in found] == [
        ("my encoder", "b0", pretrained.STUDIO_FOLDER),
        ("nvidia/mit-b0", "b0", pretrained.STUDIO_FOLDER)]  # listed once, the data folder's copy
    assert found[1].folder == home / "pretrained" / "nvidia--mit-b0"
    [(folder, problem)] = pretrained.unusable_in_pretrained_dir()
    assert folder.name == "half copy" and problem.startswith("no weights")


def test_a_cached_checkpoint_loads_through_model_pretrained(hf_cache, b0_weights):
    import torch
    from transformers import SegformerForSemanticSegmentation

    from core.config import StudioConfig, apply_overrides, validate
    from core.model.factory import build_segformer

    [checkpoint] = pretrained.find_pretrained()
    cfg = apply_overrides(StudioConfig(), [f"model.pretrained={checkpoint.folder}"])
    assert "model.pretrained" not in validate(cfg)
    model = build_segformer(cfg.model)  # from_pretrained through the cache's symlinks
    saved = SegformerForSemanticSegmentation.from_pretrained(b0_weights).state_dict()
    loaded = model.state_dict()
    encoder = [key for key in saved if key.startswith("segformer.")]
    assert encoder and all(torch.equal(loaded[key], saved[key]) for key in encoder)


# -- main.py pretrained list ---------------------------------------------------------------------
def test_list_with_nothing_found_says_how_to_get_some(no_hub, home, capsys):
    assert _code(["pretrained", "list"]) == 0
    out = capsys.readouterr().out
    assert "no pretrained SegFormer checkpoints found" in out
    assert "main.py pretrained download nvidia/mit-b0" in out and str(home / "pretrained") in out


def test_list_prints_name_variant_and_folder_of_each(hf_cache, home, capsys):
    (home / "pretrained" / "broken").mkdir(parents=True)
    assert _code(["pretrained", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    snapshot = hf_cache / "models--nvidia--mit-b0" / "snapshots" / COMMIT
    assert lines[0].split(maxsplit=2) == ["nvidia/mit-b0", "b0", str(snapshot)]
    assert f"skipped {home / 'pretrained' / 'broken'}: no config.json" in lines


def test_list_reads_the_cache_from_hf_hub_cache_in_the_environment(hf_cache, home):
    env = {**os.environ, "HF_HUB_CACHE": str(hf_cache), "SEGFORMER_STUDIO_HOME": str(home)}
    done = subprocess.run([sys.executable, "main.py", "pretrained", "list"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nvidia/mit-b0  b0  ")


# -- main.py pretrained download -----------------------------------------------------------------
def test_download_offline_is_one_error_line_with_the_manual_steps(no_hub, home, capsys):
    assert _code(["pretrained", "download", "nvidia/mit-b0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: cannot download nvidia/mit-b0")
    target = home / "pretrained" / "nvidia--mit-b0"
    for step in ("http://127.0.0.1:9/nvidia/mit-b0/tree/main", "config.json", "model.safetensors",
                 f"copy them into '{target}'"):
        assert step in err
    assert not (home / "pretrained").exists() or not any((home / "pretrained").iterdir())


def test_an_unknown_repo_is_named_with_the_manual_steps(monkeypatch, no_hub, home, capsys):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError, Response

    http = sys.modules[Response.__module__.split(".")[0]]  # the HTTP client huggingface_hub uses

    def not_found(self, repo_id, **_kw):
        request = http.Request("GET", f"http://127.0.0.1:9/api/models/{repo_id}")
        raise RepositoryNotFoundError("404 Repository Not Found",
                                      response=Response(404, request=request))

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", not_found)
    assert _code(["pretrained", "download", "nvidia/mit-b9"]) == 2
    err = capsys.readouterr().err
    assert "nvidia/mit-b9 was not found on http://127.0.0.1:9" in err and "to get it by hand" in err


def test_a_download_lands_whole_and_is_found(monkeypatch, home, hf_cache, b0_weights, capsys):
    hub = FakeHub({"config.json": b0_weights / "config.json",
                   "model.safetensors": b0_weights / "model.safetensors",
                   "tf_model.h5": b0_weights / "config.json"}).install(monkeypatch)
    assert _code(["pretrained", "download", "nvidia/mit-b0"]) == 0
    out = capsys.readouterr().out
    target = home / "pretrained" / "nvidia--mit-b0"
    assert hub.calls == [["config.json"], ["model.safetensors"]]  # config checked first; no .h5
    assert "  0% of" in out and "100% of" in out and f"model.pretrained={target}" in out
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in (home / "pretrained").iterdir()] == ["nvidia--mit-b0"]
    assert pretrained.find_pretrained()[0].folder == target
    assert _code(["pretrained", "download", "nvidia/mit-b0"]) == 0  # already there: no download
    assert "is already in" in capsys.readouterr().out and len(hub.calls) == 2


def test_a_repo_that_is_no_segformer_costs_only_its_config(monkeypatch, home, tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    hub = FakeHub({"config.json": tmp_path / "config.json",
                   "model.safetensors": tmp_path / "config.json"}).install(monkeypatch)
    assert _code(["pretrained", "download", "google/bert-tiny"]) == 2
    assert "google/bert-tiny is not a SegFormer MiT-B0…B5 encoder" in capsys.readouterr().err
    assert hub.calls == [["config.json"]] and not any((home / "pretrained").iterdir())


def test_a_dropped_connection_leaves_no_half_folder(monkeypatch, home, b0_weights, capsys):
    FakeHub({"config.json": b0_weights / "config.json",
             "model.safetensors": b0_weights / "model.safetensors"},
            chunk=1 << 18, fail_after=1 << 20).install(monkeypatch)
    assert _code(["pretrained", "download", "nvidia/mit-b0"]) == 2
    assert "cannot be reached (ConnectionError)" in capsys.readouterr().err
    assert not any((home / "pretrained").iterdir())


@pytest.mark.parametrize("stop", [CancelledError, KeyboardInterrupt])
def test_cancel_or_ctrl_c_stops_the_download_threads_and_leaves_nothing(
        monkeypatch, home, b0_weights, stop):
    hub = FakeHub({"config.json": b0_weights / "config.json",
                   "model.safetensors": b0_weights / "model.safetensors"},
                  chunk=1 << 16, pause=0.01).install(monkeypatch)
    events = []

    def cancel() -> bool:  # Cancel pressed (or Ctrl+C arriving) once the weights are coming
        if any(e.message.endswith("model.safetensors") and e.done > e.total // 4 for e in events):
            if stop is KeyboardInterrupt:
                raise KeyboardInterrupt
            return True
        return False

    with pytest.raises(stop):
        pretrained.download_pretrained("nvidia/mit-b0", events.append, cancel)
    assert hub.stopped  # the downloading thread ended at its next chunk, not the file's end
    assert events[-1].done < events[-1].total
    assert not any((home / "pretrained").iterdir())


def test_a_malformed_id_is_refused_before_anything_happens(home, capsys):
    assert _code(["pretrained", "download", "mit b0"]) == 2
    assert capsys.readouterr().err.startswith("error: 'mit b0' is not a Hugging Face model id")
    with pytest.raises(StudioError, match="ORG/NAME"):
        pretrained.download_pretrained("../evil")


def test_both_loaders_work_where_kernels_is_absent(trained_run, b0_weights):
    """The packaged app carries no ``kernels`` (packaging/spec_support.py). transformers >= 5.25
    kernelizes in from_pretrained by default and raised "Kernels are not available" there: the
    packaged self-test failed at predict. Both loaders pass use_kernels=False; this runs them with
    ``kernels`` hidden as it is in the build."""
    run_dir, _, _ = trained_run
    code = (
        "import sys; sys.modules['kernels'] = None\n"
        "from pathlib import Path\n"
        "from core.config import StudioConfig, apply_overrides\n"
        "from core.model.factory import build_segformer\n"
        "from core.predict import load_model\n"
        f"cfg = apply_overrides(StudioConfig(), ['model.pretrained=' + {str(b0_weights)!r}])\n"
        "build_segformer(cfg.model)\n"
        f"load_model(Path({str(run_dir / 'model')!r}), device='cpu')\n"
        "print('both loaded')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "both loaded" in done.stdout
