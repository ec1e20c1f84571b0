"""Loading through ``transformers``, tiny OLMo presets, BPE tokenizer training, parameter counts.

Models come from a checkpoint of a series (:mod:`coft_utils.foundation.series`), or are built
fresh from a tiny OLMo size preset::

    from coft_utils.foundation import models, series
    s = series.get_series("olmo-1b")                    # (also models.get_series)
    model = models.load_model(s.checkpoints[0])         # safetensors (else .bin, weights_only),
                                                        # trust_remote_code=False
    tok = models.load_tokenizer(s.checkpoints[0])
    models.identity(s.checkpoints[0])                   # what results are keyed by: hub_id@commit,
                                                        # or a content fingerprint of a folder

    cfg = models.olmo_config("olmo-nano", vocab_size=1024)   # tiny OLMo architecture, from config
    model = models.build_model(cfg, seed=0)
    tok = models.train_tokenizer(data.gutenberg_bodies("train", max_chars=5_000_000),
                                 vocab_size=1024, out_dir="runs/tok")

Re-exported from their new homes, so ``models.X`` works as before:

* :mod:`coft_utils.foundation.series` -- ``Checkpoint``, ``CheckpointSeries``, ``SeriesError``,
  ``SERIES`` (the built-in hub series), ``get_series``, ``check_revisions`` (and the pinned hub
  revision names);
* :mod:`coft_utils.foundation.weights` -- ``identity``, ``fingerprint``, ``hub_commit``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .series import (SERIES, Checkpoint, CheckpointSeries, SeriesError,  # noqa: F401
                     check_revisions, get_series)
from .weights import fingerprint, hub_commit, identity  # noqa: F401

__all__ = ["Checkpoint", "CheckpointSeries", "SERIES", "get_series", "load_model", "load_tokenizer",
           "OLMO_PRESETS", "olmo_config", "build_model", "count_params", "mup_width_mult",
           "mup_init", "mup_param_groups", "train_tokenizer",
           "save_model", "check_revisions", "SeriesError", "identity", "fingerprint", "hub_commit"]


# --------------------------------------------------------------------------- loading
def _src(ckpt: Checkpoint | str):
    if isinstance(ckpt, Checkpoint):
        return (ckpt.path, None) if ckpt.path else (ckpt.hub_id, ckpt.revision)
    return str(ckpt), None


def _hub_kw(src: str) -> dict:
    """``cache_dir`` for a hub source: the hub cache named by the environment now (see
    ``weights.hub_cache_dir``); nothing for a local folder."""
    from .weights import hub_cache_dir
    return {} if Path(src).is_dir() else {"cache_dir": str(hub_cache_dir())}


def _weight_format(ckpt: Checkpoint | str) -> str:
    """'safetensors' or 'bin': what ``ckpt``'s files hold, decided from its file list (a local
    folder's files; a hub revision's files from the hub cache offline or the hub's file list
    online), before anything is loaded. Safetensors win when both are there."""
    from .weights import repo_files, weight_format
    src, rev = _src(ckpt)
    label = ckpt.label if isinstance(ckpt, Checkpoint) else None
    if (isinstance(ckpt, Checkpoint) and ckpt.path) or Path(src).is_dir():
        names = [p.name for p in Path(src).iterdir() if p.is_file()]
        where = f"local folder {src}"
    else:
        names = repo_files(src, rev, label)
        where = f"{src}@{rev or 'main'}"
    fmt = weight_format(names)
    if fmt is None:
        what = f"checkpoint {label!r}: " if label is not None else ""
        raise SeriesError(f"{what}{where} holds no weights (*.safetensors or pytorch_model*.bin); "
                          f"its files: {sorted(names)[:12]}")
    return fmt


def load_model(ckpt: Checkpoint | str, device: str = "cpu", dtype=None):
    """Load a causal LM through ``AutoModelForCausalLM``, never with remote code.

    Safetensors when the checkpoint has them; ``pytorch_model*.bin`` only when it has no
    safetensors (e.g. LLM360/Amber's ``ckpt_*`` branches), read by transformers with
    ``torch.load(weights_only=True)``, which loads tensors and refuses pickled code."""
    from transformers import AutoModelForCausalLM
    src, rev = _src(ckpt)
    if isinstance(ckpt, Checkpoint) and ckpt.path and not Path(ckpt.path).is_dir():
        raise SeriesError(f"checkpoint {ckpt.label!r}: local folder {ckpt.path} does not exist")
    fmt = _weight_format(ckpt)
    kw = dict(revision=rev, use_safetensors=fmt == "safetensors", trust_remote_code=False, **_hub_kw(src))
    if fmt == "bin":
        kw["weights_only"] = True
    if dtype is not None:
        kw["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(src, **kw)
    return model.to(device).eval()


def load_tokenizer(ckpt: Checkpoint | str, series: CheckpointSeries | None = None):
    from transformers import AutoTokenizer
    if series is not None and series.tokenizer:
        return AutoTokenizer.from_pretrained(series.tokenizer, trust_remote_code=False, **_hub_kw(series.tokenizer))
    src, rev = _src(ckpt)
    return AutoTokenizer.from_pretrained(src, revision=rev, trust_remote_code=False, **_hub_kw(src))


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


# --------------------------------------------------------------------------- tiny OLMo presets
# name -> (layers, d_model, heads, mlp hidden). Non-embedding params = layers x (4 d^2 + 3 d mlp)
# (q, k, v, o and SwiGLU gate/up/down, no biases, non-parametric LayerNorm: OLMo-1's architecture).
# The paper's OLMo-15M/30M/90M (Springer et al. 2025, App. D.1: "pre-train models using the OLMo
# codebase") are named by their size; the per-size layers / d_model / heads of its Table 3 could
# not be read from any stored public copy of the paper (only its opening is indexed), so these
# three are CHOSEN: non-embedding sizes 14.2M / 32.1M / 84.9M, head_dim 64 in all three (so muP's
# 1/d attention rule and 1/sqrt(d) agree up to a constant), MLP ~ 8/3 d as in SwiGLU models.
OLMO_PRESETS: dict[str, tuple[int, int, int, int]] = {
    "olmo-pico": (2, 32, 2, 128),     # tests
    "olmo-nano": (2, 64, 4, 256),     # cpu profile
    "olmo-micro": (4, 128, 4, 512),
    "olmo-mini": (6, 256, 8, 1024),   # gpu profile
    "olmo-15m": (8, 384, 6, 1024),    # paper: 14.2M non-embedding (chosen, see above)
    "olmo-30m": (10, 512, 8, 1408),   # paper: 32.1M non-embedding (chosen; the suite's default at paper)
    "olmo-90m": (12, 768, 12, 2048),  # paper: 84.9M non-embedding (chosen)
}


def olmo_config(preset: str, vocab_size: int, max_len: int = 256, tie: bool = True, **extra):
    """An ``OlmoConfig`` for a named size preset (OLMo architecture from ``transformers``).

    ``tie=False`` gives a separate output layer (``lm_head``), as muP needs (its readout is scaled
    apart from the input embedding; the OLMo codebase's muP ladder, ``scripts/mup_ladder.py`` in
    allenai/OLMo, also sets ``weight_tying=False``).
    """
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


def build_model(config, seed: int = 0, mup_base_width: int = 0):
    """A freshly initialized ``OlmoForCausalLM`` (deterministic for a given seed).

    ``mup_base_width`` > 0: re-initialized in muP (:func:`mup_init`); 0: the standard init."""
    import torch
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if mup_base_width:
        mup_init(model, mup_base_width, seed=seed)
    return model


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


# --------------------------------------------------------------------------- muP
# The maximal update parametrization for Adam (Yang et al. 2022, "Tensor Programs V", Table 3 /
# Table 8, and the `mup` package's README: MuReadout, MuAdam), written out for OLMo instead of
# through `mup` (1.0.0 wraps modules and optimizers; its readout multiplier would live in a forward
# that save_pretrained does not store). With the width multiplier m = d_model / base_width:
#
#   parameter            init std          Adam LR     AdamW weight decay
#   input embedding      sigma             eta         wd
#   hidden matrices      sigma / sqrt(m)   eta / m     wd * m   (lr x wd unchanged, like MuAdam)
#   output (lm_head)     sigma / m         eta / m     wd * m
#
# The output row is MuReadout's "logits / m" folded into the weight: Adam is invariant to the
# gradient's scale, so training W/m with init sigma/m and LR eta/m is the same run as training W
# (init sigma, LR eta) behind a 1/m multiplier, and the saved model is a plain OlmoForCausalLM that
# every chapter loads as is. At m = 1 this is the standard parametrization. Attention keeps
# 1/sqrt(head_dim): the presets scale width by heads at a fixed head_dim of 64, where muP's 1/d
# rule differs from it only by a constant. Biases/norm gains: OLMo-1 has none.
def mup_width_mult(model_or_config, base_width: int) -> float:
    """m = d_model / base_width (error on a bad base width)."""
    cfg = getattr(model_or_config, "config", model_or_config)
    if not (isinstance(base_width, int) and base_width > 0):
        raise SeriesError(f"mup base width must be a positive integer, got {base_width!r}")
    return cfg.hidden_size / base_width


def _mup_kind(name: str, p) -> str:
    if p.ndim < 2:
        return "vector"
    if "embed_tokens" in name:
        return "input"
    if "lm_head" in name:
        return "output"
    return "hidden"


def mup_init(model, base_width: int, seed: int = 0) -> None:
    """Re-initialize ``model``'s weights in muP (table above); the output layer must be untied."""
    import torch
    if getattr(model.config, "tie_word_embeddings", False):
        raise SeriesError("muP needs a separate output layer: build the model with olmo_config(..., tie=False)")
    m = mup_width_mult(model, base_width)
    sigma = model.config.initializer_range
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, p in model.named_parameters():
            kind = _mup_kind(name, p)
            if kind == "vector":
                continue
            std = {"input": sigma, "hidden": sigma / m ** 0.5, "output": sigma / m}[kind]
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * std)


def mup_param_groups(model, base_width: int, lr: float, weight_decay: float) -> list[dict]:
    """AdamW parameter groups in muP: hidden and output matrices at ``lr / m`` with weight decay
    ``wd * m``, the input embedding at ``lr`` / ``wd``, vectors at ``lr`` without decay."""
    m = mup_width_mult(model, base_width)
    buckets: dict[str, list] = {"input": [], "hidden": [], "output": [], "vector": []}
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        buckets[_mup_kind(name, p)].append(p)
    groups = [{"params": buckets["input"], "lr": lr, "weight_decay": weight_decay, "mup": "input"},
              {"params": buckets["hidden"] + buckets["output"], "lr": lr / m, "weight_decay": weight_decay * m,
               "mup": "hidden+output"},
              {"params": buckets["vector"], "lr": lr, "weight_decay": 0.0, "mup": "vector"}]
    return [g for g in groups if g["params"]]


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
