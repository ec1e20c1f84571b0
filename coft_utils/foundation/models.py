"""Checkpoint series, loading through ``transformers``, tiny OLMo presets, BPE tokenizer training.

A *checkpoint series* is an ordered list of checkpoints of one model family, each with a label,
its pre-training tokens and a source: a hub id + revision (what A100 users run) or a local
folder (what the project trains here). Every chapter takes a series, so pointing the companion
at your own model family is one JSON file or one dict::

    from coft_utils.foundation import models
    s = models.get_series("olmo-1b")                    # built-in: the paper's OLMo-1B revisions
    s.checkpoints[0].revision                           # 'step10000-tokens42B'
    s = models.get_series({"name": "mine", "checkpoints": [
        {"label": "10B", "tokens": 10e9, "hub_id": "me/model", "revision": "step1000"},
        {"label": "20B", "tokens": 20e9, "path": "/data/ckpt-2000"}]})
    model = models.load_model(s.checkpoints[0])         # safetensors only, trust_remote_code=False
    tok = models.load_tokenizer(s.checkpoints[0])
    models.identity(s.checkpoints[0])                   # what results are keyed by: hub_id@commit,
                                                        # or a content fingerprint of a folder

    cfg = models.olmo_config("olmo-nano", vocab_size=1024)   # tiny OLMo architecture, from config
    model = models.build_model(cfg, seed=0)
    tok = models.train_tokenizer(data.gutenberg_bodies("train", max_chars=5_000_000),
                                 vocab_size=1024, out_dir="runs/tok")

Hub revision names are pinned here. They follow each repository's scheme (OLMo-1B-hf:
``stepN-tokensMB`` with M = round(N x 4,194,304 / 1e9); OLMo-2 stage 1:
``stage1-stepN-tokensMB`` with M = ceil(N x 4,194,304 / 1e9); Pythia: ``stepN``; Amber:
``ckpt_KKK``); :func:`check_revisions` lists a repository's refs online and reports any that
are missing, before a paper-scale run spends GPU hours.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["Checkpoint", "CheckpointSeries", "SERIES", "get_series", "load_model", "load_tokenizer",
           "OLMO_PRESETS", "olmo_config", "build_model", "count_params", "train_tokenizer",
           "save_model", "check_revisions", "SeriesError", "identity", "fingerprint", "hub_commit"]


class SeriesError(ValueError):
    """A checkpoint or series definition that is not valid."""


@dataclass(frozen=True)
class Checkpoint:
    label: str
    tokens: float  # pre-training tokens seen by this checkpoint
    hub_id: str | None = None
    revision: str | None = None
    path: str | None = None  # local folder (takes precedence over hub_id)

    def __post_init__(self):
        if not (self.path or self.hub_id):
            raise SeriesError(f"checkpoint {self.label!r} needs a local 'path' or a 'hub_id'")
        if not (isinstance(self.tokens, (int, float)) and self.tokens >= 0 and math.isfinite(self.tokens)):
            raise SeriesError(f"checkpoint {self.label!r}: tokens must be a finite number >= 0, "
                              f"got {self.tokens!r}")

    @property
    def source(self) -> str:
        return self.path if self.path else f"{self.hub_id}@{self.revision or 'main'}"

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class CheckpointSeries:
    name: str
    checkpoints: tuple[Checkpoint, ...]
    description: str = ""
    tokenizer: str | None = None  # hub id or folder; default: each checkpoint's own
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.checkpoints:
            raise SeriesError(f"series {self.name!r} has no checkpoints")
        toks = [c.tokens for c in self.checkpoints]
        if toks != sorted(toks):
            raise SeriesError(f"series {self.name!r}: checkpoints must be ordered by tokens, got {toks}")
        labels = [c.label for c in self.checkpoints]
        if len(set(labels)) != len(labels):
            raise SeriesError(f"series {self.name!r}: labels must be unique, got {labels}")

    def __len__(self):
        return len(self.checkpoints)

    def __iter__(self):
        return iter(self.checkpoints)

    def select(self, labels: Iterable[str]) -> "CheckpointSeries":
        want = list(labels)
        have = {c.label: c for c in self.checkpoints}
        bad = [l for l in want if l not in have]
        if bad:
            raise SeriesError(f"series {self.name!r} has no checkpoint(s) {bad}; allowed: {list(have)}")
        return CheckpointSeries(self.name, tuple(c for c in self.checkpoints if c.label in want),
                                self.description, self.tokenizer, dict(self.meta))

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "tokenizer": self.tokenizer,
                "meta": self.meta, "checkpoints": [c.to_dict() for c in self.checkpoints]}

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, p)
        return p

    @classmethod
    def from_dict(cls, d: Mapping) -> "CheckpointSeries":
        try:
            cks = tuple(Checkpoint(**c) for c in d["checkpoints"])
            return cls(d["name"], cks, d.get("description", ""), d.get("tokenizer"), dict(d.get("meta") or {}))
        except (KeyError, TypeError) as e:
            raise SeriesError(f"not a valid series definition ({e}); expected "
                              "{'name': ..., 'checkpoints': [{'label', 'tokens', 'hub_id'+'revision' | 'path'}]}") from None


# --------------------------------------------------------------------------- built-in series
def _olmo1_rev(step: int) -> str:
    return f"step{step}-tokens{round(step * 4_194_304 / 1e9)}B"


def _olmo2_rev(step: int) -> str:
    return f"stage1-step{step}-tokens{math.ceil(step * 4_194_304 / 1e9)}B"


def _fmt_tokens(t: float) -> str:
    return f"{t / 1e12:.2f}T" if t >= 1e12 else f"{t / 1e9:.0f}B" if t >= 1e9 else f"{t / 1e6:.0f}M"


def _hub_series(name, hub_id, steps, rev, tokens_per_step, description, final_main=None):
    cks = [Checkpoint(_fmt_tokens(s * tokens_per_step), s * tokens_per_step, hub_id, rev(s)) for s in steps]
    if final_main:
        cks.append(Checkpoint(f"final ({_fmt_tokens(final_main)})", final_main, hub_id, "main"))
    return CheckpointSeries(name, tuple(cks), description)


# OLMo-1B (0.04T .. 3.1T; points near 1.5T, 2.3T, 2.5T and 3T as in the paper's Fig. 1)
OLMO1B_STEPS = (10000, 50000, 100000, 200000, 300000, 360000, 450000, 550000, 600000, 650000,
                700000, 738000)
# OLMo-2-1124-7B stage-1 (up to ~3.9T tokens)
OLMO2_7B_STEPS = (50000, 100000, 200000, 300000, 400000, 500000, 600000, 700000, 800000, 928646)
# Pythia: doubling steps (~2B .. 134B tokens, the Pythia-70M reproduction report's range) + final
PYTHIA_STEPS = (1000, 2000, 4000, 8000, 16000, 32000, 64000, 143000)

SERIES: dict[str, CheckpointSeries] = {}


def _register(s: CheckpointSeries):
    SERIES[s.name] = s


_register(_hub_series("olmo-1b", "allenai/OLMo-1B-hf", OLMO1B_STEPS, _olmo1_rev, 4_194_304,
                      "OLMo-1B intermediate checkpoints (paper Figs. 1-2, 3-5)"))
_register(_hub_series("olmo-2-7b-stage1", "allenai/OLMo-2-1124-7B", OLMO2_7B_STEPS, _olmo2_rev,
                      4_194_304, "OLMo-2-7B stage-1 checkpoints"))
_register(CheckpointSeries("amber", tuple(
    Checkpoint(_fmt_tokens((k + 1) * 3.5e9), (k + 1) * 3.5e9, "LLM360/Amber", f"ckpt_{k:03d}")
    for k in (10, 30, 60, 100, 150, 200, 250, 300, 359)), "LLM360 Amber-7B (360 checkpoints of ~3.5B tokens)"))
for _size in ("70m", "160m", "410m", "1b"):
    _register(_hub_series(f"pythia-{_size}", f"EleutherAI/pythia-{_size}", PYTHIA_STEPS,
                          lambda s: f"step{s}", 2_097_152, f"Pythia-{_size} (2M tokens per step)"))


def get_series(spec) -> CheckpointSeries:
    """A series from a built-in name, a JSON file path, a dict, or a series itself."""
    if isinstance(spec, CheckpointSeries):
        return spec
    if isinstance(spec, Mapping):
        return CheckpointSeries.from_dict(spec)
    if isinstance(spec, (str, os.PathLike)):
        if str(spec) in SERIES:
            return SERIES[str(spec)]
        p = Path(spec)
        if p.suffix == ".json" and p.is_file():
            return CheckpointSeries.from_dict(json.loads(p.read_text()))
        if p.suffix == ".json":
            raise SeriesError(f"series file {p} does not exist")
    raise SeriesError(f"unknown series {spec!r}; allowed: a built-in name ({', '.join(SERIES)}), "
                      "a path to a series .json file, or a dict")


# --------------------------------------------------------------------------- loading
def _src(ckpt: Checkpoint | str):
    if isinstance(ckpt, Checkpoint):
        return (ckpt.path, None) if ckpt.path else (ckpt.hub_id, ckpt.revision)
    return str(ckpt), None


# --------------------------------------------------------------------------- identity
# What a results record is keyed by: the weights themselves, not the checkpoint's label. A local
# folder is fingerprinted by the full content of its weight files (cached by stat stamp); a hub
# checkpoint by its commit hash.
_WEIGHT_GLOBS = ("*.safetensors", "*.safetensors.index.json", "config.json")
_HEX40 = re.compile(r"[0-9a-f]{40}")
_fp_lock = threading.Lock()
_fp_memo: dict[tuple, str] = {}


def _weight_files(folder: Path) -> list[Path]:
    seen = {p.name: p for g in _WEIGHT_GLOBS for p in folder.glob(g) if p.is_file()}
    return [seen[n] for n in sorted(seen)]


def _fp_cache() -> Path:
    from . import data
    return data.cache_dir() / "weights_fingerprint.json"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    ``*.safetensors``, ``*.safetensors.index.json`` and ``config.json``, sorted by name.

    Hashed in full once, then cached in ``data.cache_dir()/weights_fingerprint.json`` keyed by
    the absolute path and each file's size, mtime, inode and ctime (a file rewritten in place
    with its mtime restored still changes ctime; a replaced file changes inode)."""
    what = f"checkpoint {label!r}: " if label is not None else ""
    d = Path(folder).expanduser().absolute()
    if not d.is_dir():
        raise SeriesError(f"{what}local folder {d} does not exist (cannot fingerprint its weights)")
    files = _weight_files(d)
    if not any(f.name.endswith(".safetensors") for f in files):
        raise SeriesError(f"{what}local folder {d} has no *.safetensors weights")
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


def identity(ckpt: Checkpoint | str) -> str:
    """What a results unit is keyed by (``unit["weights"]``): for a local folder the first 16 hex
    of :func:`fingerprint` (the content of its weights), for a hub checkpoint
    ``"{hub_id}@{commit}"`` (:func:`hub_commit`). Cheap on repeated calls (cached)."""
    if isinstance(ckpt, Checkpoint):
        if ckpt.path:
            return fingerprint(ckpt.path, ckpt.label)[:16]
        return f"{ckpt.hub_id}@{hub_commit(ckpt.hub_id, ckpt.revision, ckpt.label)}"
    return fingerprint(str(ckpt))[:16]


def load_model(ckpt: Checkpoint | str, device: str = "cpu", dtype=None):
    """Load a causal LM through ``AutoModelForCausalLM`` (safetensors only, no remote code)."""
    from transformers import AutoModelForCausalLM
    src, rev = _src(ckpt)
    if isinstance(ckpt, Checkpoint) and ckpt.path and not Path(ckpt.path).is_dir():
        raise SeriesError(f"checkpoint {ckpt.label!r}: local folder {ckpt.path} does not exist")
    kw = dict(revision=rev, use_safetensors=True, trust_remote_code=False)
    if dtype is not None:
        kw["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(src, **kw)
    return model.to(device).eval()


def load_tokenizer(ckpt: Checkpoint | str, series: CheckpointSeries | None = None):
    from transformers import AutoTokenizer
    if series is not None and series.tokenizer:
        return AutoTokenizer.from_pretrained(series.tokenizer, trust_remote_code=False)
    src, rev = _src(ckpt)
    return AutoTokenizer.from_pretrained(src, revision=rev, trust_remote_code=False)


def save_model(model, out_dir: str | os.PathLike, tokenizer=None) -> Path:
    """Save as safetensors (atomically: into a temporary folder, then renamed)."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if out.exists():
        import shutil
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def check_revisions(series: CheckpointSeries) -> dict[str, list[str]]:
    """Online only: {hub_id: [missing revisions]} for a hub series (empty lists: all present)."""
    from huggingface_hub import list_repo_refs
    missing: dict[str, list[str]] = {}
    for hub_id in {c.hub_id for c in series if c.hub_id and not c.path}:
        refs = list_repo_refs(hub_id)
        have = {b.name for b in refs.branches} | {t.name for t in refs.tags}
        missing[hub_id] = [c.revision for c in series if c.hub_id == hub_id and (c.revision or "main") not in have]
    return missing


# --------------------------------------------------------------------------- tiny OLMo presets
# name -> (layers, d_model, heads, mlp hidden). Non-embedding params ~ 12 d^2 per layer.
OLMO_PRESETS: dict[str, tuple[int, int, int, int]] = {
    "olmo-pico": (2, 32, 2, 128),     # tests
    "olmo-nano": (2, 64, 4, 256),     # cpu profile
    "olmo-micro": (4, 128, 4, 512),
    "olmo-mini": (6, 256, 8, 1024),   # gpu profile
    "olmo-15m": (8, 384, 6, 1024),    # paper: ~15M non-embedding
    "olmo-30m": (10, 512, 8, 1408),   # paper: ~30M
    "olmo-90m": (12, 768, 12, 2048),  # paper: ~90M
}


def olmo_config(preset: str, vocab_size: int, max_len: int = 256, tie: bool = True, **extra):
    """An ``OlmoConfig`` for a named size preset (OLMo architecture from ``transformers``)."""
    from transformers import OlmoConfig
    if preset not in OLMO_PRESETS:
        raise SeriesError(f"unknown OLMo preset {preset!r}; allowed: {', '.join(OLMO_PRESETS)}")
    if not (isinstance(vocab_size, int) and vocab_size >= 16):
        raise SeriesError(f"vocab_size must be an integer >= 16, got {vocab_size!r}")
    layers, d, heads, mlp = OLMO_PRESETS[preset]
    return OlmoConfig(vocab_size=vocab_size, hidden_size=d, intermediate_size=mlp,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_len, tie_word_embeddings=tie,
                      pad_token_id=extra.pop("pad_token_id", 1), bos_token_id=extra.pop("bos_token_id", 0),
                      eos_token_id=extra.pop("eos_token_id", 0), initializer_range=0.02, **extra)


def build_model(config, seed: int = 0):
    """A freshly initialized ``OlmoForCausalLM`` (deterministic for a given seed)."""
    import torch
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def count_params(model, embeddings: bool = True) -> int:
    seen, n = set(), 0
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if not embeddings and ("embed_tokens" in name or "lm_head" in name):
            continue
        n += p.numel()
    return n


# --------------------------------------------------------------------------- tokenizer
SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>")
# A minimal chat template for the tiny tokenizer (TRL's SFTTrainer uses it for instruction tuning).
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>\n{{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}<|assistant|>\n"
    "{% generation %}{{ m['content'] }}<|endoftext|>{% endgeneration %}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike | None = None,
                    min_frequency: int = 2):
    """Train a byte-level BPE with ``tokenizers``; return it as a ``transformers`` tokenizer.

    Token 0 is ``<|endoftext|>`` (bos/eos), 1 is ``<|pad|>``; ``<|user|>``/``<|assistant|>`` and
    a chat template serve instruction tuning. Saved with ``save_pretrained`` when ``out_dir``.
    """
    from tokenizers import Tokenizer, decoders, models as tmodels, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    if not (isinstance(vocab_size, int) and 256 + len(SPECIAL_TOKENS) < vocab_size <= 1_000_000):
        raise SeriesError(f"vocab_size must be an integer in ({256 + len(SPECIAL_TOKENS)}, 1000000], "
                          f"got {vocab_size!r}")
    tok = Tokenizer(tmodels.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token=None, pad_token="<|pad|>",
                                   additional_special_tokens=["<|user|>", "<|assistant|>"])
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 1 << 20
    if out_dir is not None:
        out = Path(out_dir)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        fast.save_pretrained(tmp)
        if out.exists():
            import shutil
            shutil.rmtree(out)
        os.replace(tmp, out)
    return fast
