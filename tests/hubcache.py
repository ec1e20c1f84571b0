"""A local Hugging Face cache laid out like the hub's, for testing the gpu/paper code path offline.

The layout is huggingface_hub's own (``HF_HUB_CACHE``)::

    <cache>/models--allenai--OLMo-1B-hf/
        refs/<revision>                  # text: the 40-hex commit of that branch
        snapshots/<commit>/<file>        # symlink -> ../../blobs/<etag>
        blobs/<etag>                     # LFS files (weights): etag = sha256 of the content,
                                         # like the hub; small files: git's blob sha1
    <cache>/datasets--allenai--c4/...    # the same for data sets

With ``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE=<cache>``, ``from_pretrained(hub_id, revision=...)``,
``hf_hub_download`` and ``snapshot_download`` resolve a revision through ``refs/`` and read the
snapshot, exactly as on a cluster node after a download::

    from tests import hubcache
    cache = tmp_path / "hub"
    src = hubcache.tiny_olmo(tmp_path / "w0", seed=0)                 # a saved tiny OLMo folder
    hubcache.add_model(cache, "allenai/OLMo-1B-hf", "step10000-tokens41B", src)
    hubcache.add_model(cache, "LLM360/Amber", "ckpt_010", src, bin=True)   # pytorch_model.bin
    hubcache.add_dataset(cache, "allenai/c4", {"en/c4-validation.00000-of-00008.json.gz": b"..."})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache)); monkeypatch.setenv("HF_HUB_OFFLINE", "1")

Two revisions given the same source folder hold byte-identical weights (the duplicate-weight
case the pre-flight check must refuse). Commits are derived from (repo, revision, content), so
the same call twice gives the same cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

__all__ = ["offline", "repo_folder", "add_files", "add_model", "add_dataset", "tiny_olmo", "commit_of", "WEIGHT_SUFFIXES"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")  # stored as LFS on the hub


@contextlib.contextmanager
def offline(cache, **env):
    """Point a block (e.g. a module-scoped fixture) at ``cache``, offline: the environment AND
    huggingface_hub's constants (it reads ``HF_HUB_CACHE``/``HF_HUB_OFFLINE`` once, at import, and
    transformers uses those), plus
    ``env`` (a value of None unsets the variable); everything is restored afterwards."""
    import huggingface_hub.constants as c
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", **env}
    old = {k: os.environ.get(k) for k in env}
    old_c = {k: getattr(c, k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = str(v)
    c.HF_HUB_CACHE, c.HF_HUB_OFFLINE = str(cache), True
    try:
        yield Path(cache)
    finally:
        for k, v in old_c.items():
            setattr(c, k, v)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def repo_folder(cache: str | os.PathLike, repo_id: str, repo_type: str = "model") -> Path:
    return Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def _etag(name: str, data: bytes) -> str:
    if name.endswith(WEIGHT_SUFFIXES):
        return hashlib.sha256(data).hexdigest()  # LFS: the hub's etag is the sha256
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git blob id


def _is_file(v: str) -> bool:
    try:
        return Path(v).is_file()
    except OSError:  # content, not a path (e.g. "File name too long")
        return False


def commit_of(repo_id: str, revision: str, files: dict[str, bytes]) -> str:
    h = hashlib.sha1(f"{repo_id}@{revision}".encode())
    for k in sorted(files):
        h.update(k.encode() + b"\0" + hashlib.sha256(files[k]).digest())
    return h.hexdigest()


def add_files(cache, repo_id: str, revision: str, files: dict[str, bytes | str | os.PathLike],
              repo_type: str = "model") -> Path:
    """Put ``files`` (path in repo -> bytes, or a local file to read) at ``revision``; returns the
    snapshot folder. ``refs/<revision>`` names the commit, as after a download."""
    blobs_in: dict[str, bytes] = {}
    for rel, v in files.items():
        blobs_in[rel] = v if isinstance(v, bytes) else Path(v).read_bytes() if isinstance(v, os.PathLike) or \
            (isinstance(v, str) and _is_file(v)) else str(v).encode()
    root = repo_folder(cache, repo_id, repo_type)
    commit = commit_of(repo_id, revision, blobs_in)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snap = root / "snapshots" / commit
    for rel, data in blobs_in.items():
        etag = _etag(rel, data)
        blob = root / "blobs" / etag
        if not blob.exists():
            blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    ref = root / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return snap


def add_model(cache, repo_id: str, revision: str, src: str | os.PathLike, bin: bool = False) -> Path:
    """A saved model folder ``src`` (config, weights, tokenizer files) as ``repo_id@revision``.
    ``bin=True`` stores the weights as ``pytorch_model.bin`` (a torch state dict), as older
    branches (e.g. LLM360/Amber's ``ckpt_*``) hold them, instead of ``model.safetensors``."""
    src = Path(src)
    files: dict[str, bytes | Path] = {}
    for p in sorted(src.rglob("*")):
        if p.is_file():
            files[str(p.relative_to(src))] = p
    if bin:
        import torch
        from safetensors.torch import load_file
        st = [k for k in files if k.endswith(".safetensors")]
        if not st:
            raise ValueError(f"{src} has no .safetensors to turn into pytorch_model.bin")
        state: dict = {}
        for k in st:
            state.update(load_file(str(files.pop(k))))
        files.pop("model.safetensors.index.json", None)
        tmp = src.parent / f".{src.name}.pytorch_model.bin"
        torch.save(state, tmp)
        files["pytorch_model.bin"] = tmp.read_bytes()
        tmp.unlink()
    return add_files(cache, repo_id, revision, files)


def add_dataset(cache, repo_id: str, files: dict[str, bytes | str | os.PathLike], revision: str = "main") -> Path:
    """Data files (path in repo -> content) of a hub data set ``repo_id`` at ``revision``."""
    return add_files(cache, repo_id, revision, files, repo_type="dataset")


def tiny_olmo(out: str | os.PathLike, seed: int = 0, vocab_size: int = 512, tokenizer=None,
              preset: str = "olmo-pico", max_len: int = 128) -> Path:
    """A saved tiny OLMo (``coft_utils.foundation.models``' preset) with ``tokenizer`` (or a
    byte-level BPE trained on a few Gutenberg lines) in ``out``; weights depend on ``seed``."""
    from coft_utils.foundation import models
    out = Path(out)
    if tokenizer is None:
        from coft_utils.foundation import data
        tokenizer = models.train_tokenizer(data.gutenberg_bodies("validation", max_chars=60_000), vocab_size)
    cfg = models.olmo_config(preset, vocab_size=len(tokenizer), max_len=max_len)
    model = models.build_model(cfg, seed=seed)
    if out.exists():
        shutil.rmtree(out)
    models.save_model(model, out, tokenizer)
    return out
