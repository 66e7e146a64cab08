"""PyInstaller hook for pytorch_lightning (the standalone package; contrib only hooks ``lightning``).

Two frozen-build traps in ``pytorch_lightning/__init__.py``:

* ``__version__.py`` reads ``version.info`` beside it at import time (FileNotFoundError without it);
* ``__init__`` imports ``__about__`` and ``__version__`` only ``if os.path.isfile(<dir>/__about__.py)``
  / ``__version__.py`` — files that do not exist on disk when the modules live in the PYZ archive.
  Without them ``pytorch_lightning.__version__`` is missing (it falls back to the unified
  ``lightning`` package, which we exclude) and ``Trainer.save_checkpoint`` fails with
  ``AttributeError: module 'pytorch_lightning' has no attribute '__version__'``.

So those two .py files are also collected as plain files next to ``version.info``; the modules
themselves are still imported from the archive. Lightning also asks ``importlib.metadata`` about
itself and its relatives (``RequirementCache``), so their metadata comes along.
"""

from PyInstaller.utils.hooks import collect_data_files, copy_metadata

datas = collect_data_files("pytorch_lightning", include_py_files=True,
                           includes=["version.info", "__about__.py", "__version__.py"])
for _dist in ("pytorch_lightning", "lightning_utilities", "torchmetrics"):
    try:
        datas += copy_metadata(_dist)
    except Exception:  # noqa: BLE001 - metadata of an optional relative; absent is fine
        pass
