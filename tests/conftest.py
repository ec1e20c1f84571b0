"""Shared test set-up: offline, quiet, and runs/caches in temporary folders where a test asks."""
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture
def tmp_runs(tmp_path, monkeypatch):
    """Results records and caches of this test go to a temporary folder."""
    monkeypatch.setenv("COFT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("COFT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path
