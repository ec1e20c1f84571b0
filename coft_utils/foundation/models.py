"""Loading through ``transformers``, tiny OLMo presets, BPE tokenizer training, parameter counts.

Models come from a checkpoint of a series (:mod:`coft_utils.foundation.series`), or are built
fresh from a tiny OLMo size preset::

    from coft_utils.foundation import models, series
    s = series.get_series("olmo-1b")                    # (also models.get_series)
    model = models.load_model(s.checkpoints[0])         # safetensors only, trust_remote_code=False
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
           "OLMO_PRESETS", "olmo_config", "build_model", "count_params", "train_tokenizer",
           "save_model", "check_revisions", "SeriesError", "identity", "fingerprint", "hub_commit"]


# --------------------------------------------------------------------------- loading
def _src(ckpt: Checkpoint | str):
    if isinstance(ckpt, Checkpoint):
        return (ckpt.path, None) if ckpt.path else (ckpt.hub_id, ckpt.revision)
    return str(ckpt), None


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
