"""The identity of a checkpoint's weights: what every results record is keyed by.

A record is keyed by the weights themselves, not by the checkpoint's label: a local folder by
a content fingerprint of its weight files, a hub checkpoint by the commit its revision points
at (offline from the hub cache, online from the hub)::

    from coft_utils.foundation import weights
    weights.identity(ckpt)                     # unit["weights"]: 16 hex of the fingerprint of a
                                               # folder, or "hub_id@<40-hex commit>"
    weights.fingerprint("runs/ckpt-2000")      # sha256 of the folder's weights (cached by stat)
    weights.hub_commit("allenai/OLMo-1B-hf", "step20000-tokens84B")

``identity``, ``fingerprint`` and ``hub_commit`` are also importable from
:mod:`coft_utils.foundation.models` (their former home).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
from pathlib import Path

from .series import Checkpoint, SeriesError

__all__ = ["identity", "fingerprint", "hub_commit", "weight_format", "cached_snapshot", "repo_files", "hub_cache_dir",
           "tokenizer_key"]

# What a results record is keyed by: the weights themselves, not the checkpoint's label. A local
# folder is fingerprinted by the full content of its weight files (cached by stat stamp); a hub
# checkpoint by its commit hash.
_WEIGHT_GLOBS = ("*.safetensors", "*.safetensors.index.json", "config.json")
_HEX40 = re.compile(r"[0-9a-f]{40}")
_fp_lock = threading.Lock()
_fp_memo: dict[tuple, str] = {}


# A folder with no safetensors (older checkpoints, e.g. LLM360/Amber's ckpt_* branches) is
# fingerprinted by its torch weights instead; a folder with safetensors keeps its fingerprint.
_BIN_GLOBS = ("pytorch_model*.bin", "pytorch_model.bin.index.json", "config.json")


def _weight_files(folder: Path) -> list[Path]:
    seen = {p.name: p for g in _WEIGHT_GLOBS for p in folder.glob(g) if p.is_file()}
    if not any(n.endswith(".safetensors") for n in seen):
        seen = {p.name: p for g in _BIN_GLOBS for p in folder.glob(g) if p.is_file()}
    return [seen[n] for n in sorted(seen)]


def weight_format(names) -> str | None:
    """'safetensors' when any of the file ``names`` is ``*.safetensors``, else 'bin' when one is
    ``pytorch_model*.bin``, else None: what ``load_model`` loads (safetensors preferred)."""
    names = [str(n).rsplit("/", 1)[-1] for n in names]
    if any(n.endswith(".safetensors") for n in names):
        return "safetensors"
    if any(n.startswith("pytorch_model") and n.endswith(".bin") for n in names):
        return "bin"
    return None


def _fp_cache() -> Path:
    from . import data
    return data.cache_dir() / "weights_fingerprint.json"


def _file_sha256(path: Path) -> str:
    from .checksums import _sha256
    return _sha256(path)


class _FileLock:
    """Inter-process lock on ``<path>.lock`` (fcntl where available; the thread lock always)."""

    def __init__(self, path: Path):
        self.path = path.with_name(path.name + ".lock")

    def __enter__(self):
        _fp_lock.acquire()
        self.fh = None
        try:
            import fcntl
            self.fh = open(self.path, "a")
            fcntl.flock(self.fh, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        return self

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()  # releases the flock
        _fp_lock.release()


def _stamp(files: list[Path]) -> list[list]:
    out = []
    for f in files:
        st = f.stat()
        out.append([f.name, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns])
    return out


def fingerprint(folder: str | os.PathLike, label: str | None = None) -> str:
    """sha256 (64 hex) of a checkpoint folder's weights: the content and size of every
    ``*.safetensors``, ``*.safetensors.index.json`` and ``config.json``, sorted by name (a folder
    without safetensors: ``pytorch_model*.bin``, its index and ``config.json``).

    Hashed in full once, then cached in ``data.cache_dir()/weights_fingerprint.json`` keyed by
    the absolute path and each file's size, mtime, inode and ctime (a file rewritten in place
    with its mtime restored still changes ctime; a replaced file changes inode)."""
    what = f"checkpoint {label!r}: " if label is not None else ""
    d = Path(folder).expanduser().absolute()
    if not d.is_dir():
        raise SeriesError(f"{what}local folder {d} does not exist (cannot fingerprint its weights)")
    files = _weight_files(d)
    if weight_format(f.name for f in files) is None:
        raise SeriesError(f"{what}local folder {d} has no weights (*.safetensors or pytorch_model*.bin)")
    stamp = _stamp(files)
    key = (str(d), json.dumps(stamp))
    if key in _fp_memo:
        return _fp_memo[key]
    cache_path = _fp_cache()
    with _FileLock(cache_path):
        try:
            cache = json.loads(cache_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            cache = {}
        ent = cache.get(str(d))
        if isinstance(ent, dict) and ent.get("stamp") == stamp and isinstance(ent.get("sha256"), str):
            digest = ent["sha256"]
        else:
            h = hashlib.sha256()
            for f, (name, size, *_rest) in zip(files, stamp):
                h.update(f"{name}\0{size}\0{_file_sha256(f)}\n".encode())
            digest = h.hexdigest()
            # the content must not have changed while it was read
            if _stamp(files) == stamp:
                cache[str(d)] = {"stamp": stamp, "sha256": digest}
                tmp = cache_path.with_name(f"{cache_path.name}.tmp{os.getpid()}")
                tmp.write_text(json.dumps(cache, indent=0, sort_keys=True))
                os.replace(tmp, cache_path)
    _fp_memo[key] = digest
    return digest


def _hub_cache_dir() -> Path:
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_cache_dir() -> Path:
    """The hub cache in use now (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, read at each call, not at
    import as ``huggingface_hub.constants`` does): what ``models.load_model`` passes as cache_dir."""
    return _hub_cache_dir()


def _offline() -> bool:
    v = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return v is not None and v.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_commit(hub_id: str, revision: str | None = None, label: str | None = None) -> str:
    """The 40-hex commit a hub revision points at: as is if it already is one; offline from the
    hub cache's ``refs/<revision>``; online from ``HfApi().model_info(...).sha``."""
    rev = revision or "main"
    if _HEX40.fullmatch(rev):
        return rev
    return _hub_commit(hub_id, rev, label, str(_hub_cache_dir()), _offline())


@functools.lru_cache(maxsize=1024)
def _hub_commit(hub_id, rev, label, cache, offline) -> str:
    from huggingface_hub.file_download import repo_folder_name
    ref = Path(cache) / repo_folder_name(repo_id=hub_id, repo_type="model") / "refs" / rev
    if ref.is_file():
        sha = ref.read_text().strip()
        if _HEX40.fullmatch(sha):
            if offline:
                return sha
    if not offline:
        from huggingface_hub import HfApi
        sha = HfApi().model_info(hub_id, revision=rev).sha
        if sha and _HEX40.fullmatch(sha):
            return sha
        raise SeriesError(f"hub checkpoint {hub_id}@{rev}: the hub gave no commit hash ({sha!r})")
    what = f"checkpoint {label!r} " if label is not None else ""
    raise SeriesError(f"{what}({hub_id}@{rev}): cannot resolve revision {rev!r} of {hub_id!r} to a commit "
                      f"offline (HF_HUB_OFFLINE=1): looked for {ref} in the hub cache {cache} "
                      f"($HF_HUB_CACHE or $HF_HOME/hub). Download it once online "
                      f"(huggingface-cli download {hub_id} --revision {rev}), point HF_HUB_CACHE at a "
                      f"cache that holds it, or pin the series to the 40-hex commit")


def cached_snapshot(hub_id: str, revision: str | None = None) -> tuple[str, Path] | None:
    """(commit, snapshot folder) of ``hub_id@revision`` in the local hub cache (``HF_HUB_CACHE``),
    read from ``refs/<revision>`` (or the revision itself when it is a 40-hex commit); None when
    the cache does not hold it."""
    from huggingface_hub.file_download import repo_folder_name
    rev = revision or "main"
    root = _hub_cache_dir() / repo_folder_name(repo_id=hub_id, repo_type="model")
    if _HEX40.fullmatch(rev):
        sha = rev
    else:
        ref = root / "refs" / rev
        if not ref.is_file():
            return None
        sha = ref.read_text().strip()
        if not _HEX40.fullmatch(sha):
            return None
    snap = root / "snapshots" / sha
    return (sha, snap) if snap.is_dir() else None


def repo_files(hub_id: str, revision: str | None = None, label: str | None = None) -> list[str]:
    """The files of ``hub_id@revision`` (paths in the repository): offline from the local hub
    cache's snapshot, online from ``HfApi().list_repo_files`` (nothing is downloaded)."""
    rev = revision or "main"
    if _offline():
        got = cached_snapshot(hub_id, rev)
        if got is None:
            what = f"checkpoint {label!r} " if label is not None else ""
            raise SeriesError(f"{what}({hub_id}@{rev}) is not in the local hub cache {_hub_cache_dir()} "
                              f"(HF_HUB_OFFLINE=1); download it first (huggingface-cli download {hub_id} "
                              f"--revision {rev}) or run online")
        snap = got[1]
        return sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())
    from huggingface_hub import HfApi
    return sorted(HfApi().list_repo_files(hub_id, revision=rev))


def identity(ckpt: Checkpoint | str) -> str:
    """What a results unit is keyed by (``unit["weights"]``): for a local folder the first 16 hex
    of :func:`fingerprint` (the content of its weights), for a hub checkpoint
    ``"{hub_id}@{commit}"`` (:func:`hub_commit`). Cheap on repeated calls (cached)."""
    if isinstance(ckpt, Checkpoint):
        if ckpt.path:
            return fingerprint(ckpt.path, ckpt.label)[:16]
        return f"{ckpt.hub_id}@{hub_commit(ckpt.hub_id, ckpt.revision, ckpt.label)}"
    return fingerprint(str(ckpt))[:16]


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model")


def tokenizer_key(series) -> dict:
    """``{"tokenizer": id}`` for a series with its own tokenizer (``series.tokenizer``: a folder ->
    the hash of its tokenizer files; a hub id -> the id), else ``{}`` (each checkpoint's own
    tokenizer, in its folder or hub revision). A unit built with it is keyed by the tokenizer too:
    naming another tokenizer recomputes, never reuses, its records."""
    spec = getattr(series, "tokenizer", None)
    if not spec:
        return {}
    d = Path(spec).expanduser()
    if not d.is_dir():
        return {"tokenizer": str(spec)}
    h = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        f = d / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes())
    return {"tokenizer": h.hexdigest()[:16]}
