"""What goes into (and stays out of) the PyInstaller build: plain functions the spec calls.

Kept apart from ``SegFormerStudio.spec`` so the choices can be unit-tested without running PyInstaller
(``tests/test_packaging.py``). Nothing here imports torch, transformers or Qt.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Callable, Iterable

APP_NAME = "SegFormerStudio"
ROOT = Path(__file__).resolve().parents[1]

# Our own packages, collected module by module: ``core.cli.runner`` imports its subcommands with
# importlib.import_module(name) and the GUI is imported lazily, so static analysis would miss some.
OWN_PACKAGES = ("core", "gui")

# transformers registers its models lazily (``_LazyModule``): ``SegformerForSemanticSegmentation``
# is imported by name at first use, which PyInstaller's static analysis cannot see.
TRANSFORMERS_HIDDEN = (
    "transformers.models.segformer",
    "transformers.models.segformer.configuration_segformer",
    "transformers.models.segformer.modeling_segformer",
)

# transformers' __init__ star-imports every model under ``if TYPE_CHECKING`` — which static analysis
# follows — so by default all ~550 architectures (thousands of modules, stored as .pyc *and* .py)
# land in the build. We only ever use SegFormer; ``auto`` is imported at run time by generic code
# (torchmetrics imports AutoModel/AutoTokenizer when transformers is installed). Whatever those
# import from other model packages (``auto`` → ``encoder_decoder``) is kept too: see
# transformers_models_needed(). At run time transformers builds its lazy index by walking the
# ``transformers/models`` folder it finds, so the models left out simply do not exist for it.
TRANSFORMERS_MODELS_SEEDS = frozenset({"segformer", "auto"})
_MODEL_REFERENCE = re.compile(
    r"^\s*(?:from|import)\s+(?:\.\.(?!\.)|\.\.\.models\.|transformers\.models\.)([A-Za-z_0-9]+)",
    re.MULTILINE)

# Other Qt bindings: pyqtgraph (and a few libraries) try several; we ship PySide6 only, and two Qt
# copies in one process crash. Build/test tools and GUI toolkits we never use go too.
ALWAYS_EXCLUDED = (
    "PyQt5", "PyQt6", "PySide2", "sip", "PyQt5.sip", "PyQt6.sip",
    "tkinter", "_tkinter", "turtle", "idlelib",
    "matplotlib", "IPython", "ipykernel", "jupyter_client", "notebook",
    "pytest", "_pytest", "pytestqt", "pytest_timeout", "py",
    "PyInstaller", "altgraph", "pip",
    # transformers only uses these for image/audio processors we do not use; it checks with
    # importlib.util.find_spec, which agrees with their absence from the build.
    "torchvision", "torchaudio",
    # The unified ``lightning`` package duplicates pytorch_lightning + lightning_fabric, which we
    # use; pytorch_lightning imports it only as a fallback when its own __version__.py is missing.
    "lightning",
    # transformers >= 5.25 requires ``kernels`` (downloads compiled layers from the Hugging Face Hub
    # when a model is ``kernelize()``d, which we never do: no download without the user's request).
    # It reads ``python_depends.json`` beside itself at import, a file the build would not carry, and
    # transformers imports it only if ``find_spec("kernels")`` finds it — so it stays out.
    "kernels",
)

# Installed or not, TensorBoard is optional: ``core.session`` logs to it only when ``import
# tensorboard`` works. Where it is absent we exclude the modules that would only try to import it
# (and pull in protobuf or grpc stubs through Lightning's loggers) — see tensorboard_excludes().
TENSORBOARD_MODULES = ("tensorboard", "tensorboardX", "torch.utils.tensorboard")

# torch's wheels ship its C++ test suite: torch/test/ (~80 MB of test executables), test programs and
# protoc in torch/bin/ (~45 MB), and test-only libraries in torch/lib/. Nothing outside torch's own
# test suite runs or loads them. torch/bin/torch_shm_manager stays (CPU tensors shared between
# processes on Linux use it), as does torch/bin/upgrader_models (TorchScript upgraders).
# (torch/testing/_internal, the *Python* test helpers, must stay: torch.utils.checkpoint and
# torch._refs import modules from it at import time, and transformers imports torch.utils.checkpoint.)
TORCH_TEST_LIBRARIES = re.compile(
    r"(^|/)(lib)?(jitbackend_test|torchbind_test|backend_with_compiler|aoti_custom_ops)"
    r"\.(so|dll|dylib|lib)$", re.IGNORECASE)
TORCH_BIN_KEPT = re.compile(r"^torch/bin/(torch_shm_manager(\.exe)?|upgrader_models(/.*)?)$",
                            re.IGNORECASE)


def own_modules(root: Path = ROOT, packages: Iterable[str] = OWN_PACKAGES) -> list[str]:
    """Every module of our packages, found on disk (nothing is imported to find them)."""
    names = []
    for package in packages:
        base = root / package
        if not (base / "__init__.py").is_file():
            continue
        for path in sorted(base.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join(parts))
    return names


def transformers_models_needed(models_dir: Path,
                               seeds: Iterable[str] = TRANSFORMERS_MODELS_SEEDS) -> set[str]:
    """The model packages ``seeds`` import, directly or through each other (module-level and
    function-level imports alike). ``modular_*.py`` files are code-generation templates that are
    never imported, so their references (segformer's → swin, vit) do not count."""
    needed, todo = set(), [s for s in seeds if (models_dir / s / "__init__.py").is_file()]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        for path in (models_dir / name).glob("*.py"):
            if path.name.startswith("modular_"):
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for ref in _MODEL_REFERENCE.findall(text):
                if ref not in needed and (models_dir / ref / "__init__.py").is_file():
                    todo.append(ref)
    return needed


def transformers_model_excludes(models_dir: Path | None,
                                seeds: Iterable[str] = TRANSFORMERS_MODELS_SEEDS) -> list[str]:
    """``transformers.models.<name>`` for every installed model package that is not needed."""
    if models_dir is None or not models_dir.is_dir():
        return []
    keep = transformers_models_needed(models_dir, seeds)
    return sorted(f"transformers.models.{p.name}" for p in models_dir.iterdir()
                  if p.is_dir() and (p / "__init__.py").is_file() and p.name not in keep)


def installed(name: str, find_spec: Callable = importlib.util.find_spec) -> bool:
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def tensorboard_excludes(find_spec: Callable = importlib.util.find_spec) -> list[str]:
    """The TensorBoard modules to leave out: all of them when tensorboard is not installed."""
    return [] if installed("tensorboard", find_spec) else list(TENSORBOARD_MODULES)


def excludes(models_dir: Path | None, find_spec: Callable = importlib.util.find_spec) -> list[str]:
    return list(ALWAYS_EXCLUDED) + tensorboard_excludes(find_spec) + \
        transformers_model_excludes(models_dir)


def hidden_imports(root: Path = ROOT) -> list[str]:
    return own_modules(root) + list(TRANSFORMERS_HIDDEN)


def keep_file(dest_name: str) -> bool:
    """False for torch's test programs and test-only libraries (see TORCH_TEST_LIBRARIES); applied
    to the binaries and the data files of the build."""
    name = dest_name.replace("\\", "/")
    if name.lower().startswith("torch/test/"):
        return False
    if name.lower().startswith("torch/bin/"):
        return bool(TORCH_BIN_KEPT.match(name))
    return not TORCH_TEST_LIBRARIES.search(name)


def resource_datas(root: Path = ROOT) -> list[tuple[str, str]]:
    """``resources/`` file by file, to ``resources/`` beside the modules (``sys._MEIPASS``), so code
    that finds it as ``Path(__file__).parents[1] / "resources"`` works from source and frozen."""
    folder = root / "resources"
    out = []
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            out.append((str(path), str(path.parent.relative_to(root))))
    return out


def app_version(root: Path = ROOT) -> str:
    text = (root / "core" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
    return match.group(1) if match else "0.0.0"


def version_tuple(version: str) -> tuple[int, int, int, int]:
    """``"0.1.0"`` → ``(0, 1, 0, 0)`` for the Windows version resource (non-numeric parts → 0)."""
    numbers = [int(m) if m.isdigit() else 0 for m in re.split(r"[.+-]", version)[:4]]
    return tuple((numbers + [0, 0, 0, 0])[:4])  # type: ignore[return-value]


def windows_version_info(version: str):
    """The VERSIONINFO resource of SegFormerStudio.exe (Properties → Details in Explorer)."""
    from PyInstaller.utils.win32.versioninfo import (FixedFileInfo, StringFileInfo, StringStruct,
                                                     StringTable, VarFileInfo, VarStruct,
                                                     VSVersionInfo)

    numbers = version_tuple(version)
    strings = {
        "CompanyName": "SegFormer Studio",
        "FileDescription": "SegFormer Studio",
        "FileVersion": version,
        "InternalName": APP_NAME,
        "LegalCopyright": "SegFormer Studio contributors",
        "OriginalFilename": f"{APP_NAME}.exe",
        "ProductName": "SegFormer Studio",
        "ProductVersion": version,
    }
    return VSVersionInfo(
        ffi=FixedFileInfo(filevers=numbers, prodvers=numbers, mask=0x3F, flags=0x0, OS=0x40004,
                          fileType=0x1, subtype=0x0, date=(0, 0)),
        kids=[StringFileInfo([StringTable("040904B0", [StringStruct(k, v)
                                                       for k, v in strings.items()])]),
              VarFileInfo([VarStruct("Translation", [0x0409, 1200])])])
