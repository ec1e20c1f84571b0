"""Shared test set-up: offline, quiet, and runs/caches in temporary folders where a test asks."""
import contextlib
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


@contextlib.contextmanager
def runs_in(root):
    """For a module-scoped fixture: records and caches under ``root`` (runs/, cache/) until the
    block ends, then the variables as they were; one torch thread (these tests time nothing)."""
    old = {k: os.environ.get(k) for k in ("COFT_RUNS_DIR", "COFT_CACHE_DIR")}
    os.environ["COFT_RUNS_DIR"] = str(Path(root) / "runs")
    os.environ["COFT_CACHE_DIR"] = str(Path(root) / "cache")
    import torch
    torch.set_num_threads(1)
    try:
        yield Path(root)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def copy_data_set(tmp_path, name):
    """A data folder under ``tmp_path`` holding only the set ``name`` and its SHA256SUMS lines
    (to corrupt or re-stamp a copy, never the shared data)."""
    import shutil

    from coft_utils.foundation import data
    root = tmp_path / "data"
    src = data.data_dir()
    shutil.copytree(src / name, root / name)
    lines = [l for l in (src / "SHA256SUMS").read_text().splitlines() if l.split()[1].startswith(name + "/")]
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return root


def small_tokenizer(cache_dir, max_chars: int, vocab_size: int):
    """A BPE trained on the first ``max_chars`` of the Gutenberg validation books, its cache in
    ``cache_dir`` (the environment is restored afterwards)."""
    from coft_utils.foundation import data, models
    old = os.environ.get("COFT_CACHE_DIR")
    os.environ["COFT_CACHE_DIR"] = str(cache_dir)
    try:
        return models.train_tokenizer(data.gutenberg_bodies("validation", max_chars=max_chars), vocab_size)
    finally:
        if old is None:
            os.environ.pop("COFT_CACHE_DIR", None)
        else:
            os.environ["COFT_CACHE_DIR"] = old
