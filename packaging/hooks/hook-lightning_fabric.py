"""PyInstaller hook for lightning_fabric (no hook for it exists in pyinstaller-hooks-contrib).

Same traps as pytorch_lightning (see hook-pytorch_lightning.py): ``__version__.py`` reads
``version.info`` at import time, and ``__init__`` imports ``__about__`` / ``__version__`` only if
those .py files exist on disk — so all three are collected as plain files.
"""

from PyInstaller.utils.hooks import collect_data_files, copy_metadata

datas = collect_data_files("lightning_fabric", include_py_files=True,
                           includes=["version.info", "__about__.py", "__version__.py"])
try:
    datas += copy_metadata("lightning_fabric")
except Exception:  # noqa: BLE001 - older releases shipped without separate metadata
    pass
