"""Shared test fixtures: the real MNIST folder (from MNIST_DIR) and the project root."""

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder of the real MNIST IDX files; tests that need it are skipped without MNIST_DIR."""
    folder = os.environ.get("MNIST_DIR")
    if not folder or not Path(folder).is_dir():
        pytest.skip("set MNIST_DIR to the folder of the MNIST IDX files to run this test")
    return Path(folder)
