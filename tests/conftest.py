"""Shared fixtures: an isolated user data folder and demo datasets made by the real generator."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def studio_home(tmp_path_factory) -> Path:
    """Keep every test's cache, runs and logs out of the real user data folder."""
    home = tmp_path_factory.mktemp("studio home")
    os.environ["SEGFORMER_STUDIO_HOME"] = str(home)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    return home


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """The default demo dataset (6 cases, 8 case-days, 288 slices), read-only for tests."""
    from core.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo data") / "demo")


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A small demo dataset (4 cases, 12 slices per scan) for quick tests."""
    from core.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("small demo") / "demo", cases=4,
                                 slices_per_scan=12, seed=3)


@pytest.fixture
def demo_copy(small_demo, tmp_path) -> Path:
    """A writable copy of the small demo dataset, for tests that break it on purpose; its path has
    a space and non-ASCII characters, as real users' paths do."""
    target = tmp_path / "dätä set" / "demo"
    shutil.copytree(small_demo, target)
    return target
