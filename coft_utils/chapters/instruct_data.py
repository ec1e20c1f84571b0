"""Chapter 01's instruction data: the dialogue sources, the held-out split, the chat template and
the tokenized dialogues.

::

    from coft_utils.chapters import instruct_data
    src = instruct_data.sft_sources(cfg)          # {source: {"train": [...], "val": [...], "test": [...]}}
    mix = instruct_data.train_mix(src, seed=0)    # every training pool, shuffled by the fine-tuning seed
    tok = instruct_data.prepare_tokenizer(tok)    # the project's chat template ({% generation %}), a pad token
    toks = instruct_data.tokenize_dialogues(tok, src["gsm8k"]["val"], 512)   # input_ids + assistant_masks
    instruct_data.hh_to_messages("\\n\\nHuman: hi\\n\\nAssistant: hello")  # chat messages (or None)

Instruction data (``sft_data``): ``hh_rlhf`` = Anthropic-HH "chosen" dialogues (here the local
harmless-base pairs; at ``paper`` the hub's full train split), split at ``"\\n\\nHuman: "`` /
``"\\n\\nAssistant: "`` into user/assistant turns (dialogues that do not end with a non-empty
assistant turn are dropped); ``alpaca_seed_tasks`` = instruction (+ ``"\\n\\n"`` + input) ->
output, one example per instance; ``gsm8k`` = GSM8K train question -> answer; ``tulu`` (paper
only) = ``allenai/tulu-v2-sft-mixture`` messages. Held-out split: per source, a permutation drawn
with the fixed seed :data:`HELDOUT_SEED` (independent of the run's seed); its first
``heldout_per_source`` examples are held out (first half: validation for LR selection, second
half: test), the rest are the training pool (at most ``train_per_source`` per source). The
training mix is the union of the pools, shuffled by the fine-tuning seed.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

from ..foundation import data, models, profiles

if TYPE_CHECKING:
    from .instruct import Config

__all__ = ["HELDOUT_SEED", "SFT_SOURCES", "hh_to_messages", "sft_sources", "train_mix", "chat_template_for",
           "prepare_tokenizer", "tokenize_dialogues"]

HELDOUT_SEED = 20250325
SFT_SOURCES = ("hh_rlhf", "alpaca_seed_tasks", "gsm8k", "tulu")


def hh_to_messages(text: str) -> list[dict] | None:
    """An Anthropic-HH transcript ("\\n\\nHuman: ... \\n\\nAssistant: ...") as chat messages."""
    import re
    parts = re.split(r"\n\n(Human|Assistant): ", "\n\n" + text.lstrip("\n"))
    msgs = []
    for role, content in zip(parts[1::2], parts[2::2]):
        r = "user" if role == "Human" else "assistant"
        content = content.strip()
        if msgs and msgs[-1]["role"] == r:  # merge accidental repeats of a role
            msgs[-1]["content"] += "\n\n" + content
        else:
            msgs.append({"role": r, "content": content})
    if not msgs or msgs[0]["role"] != "user" or msgs[-1]["role"] != "assistant" or not msgs[-1]["content"]:
        return None
    return msgs


def _source_dialogues(name: str, offline: bool) -> list[list[dict]]:
    import datasets
    if name == "hh_rlhf":
        ds = data.load("hh_rlhf", "test") if offline else datasets.load_dataset(data.spec("hh_rlhf").hub, split="train")
        out = [hh_to_messages(t) for t in ds["chosen"]]
        return [m for m in out if m]
    if name == "alpaca_seed_tasks":
        out = []
        for r in data.load("alpaca_seed_tasks", "train"):
            for inst in r["instances"]:
                user = r["instruction"].strip() + (("\n\n" + inst["input"].strip()) if inst.get("input", "").strip() else "")
                if inst.get("output", "").strip():
                    out.append([{"role": "user", "content": user}, {"role": "assistant", "content": inst["output"].strip()}])
        return out
    if name == "gsm8k":
        ds = data.load("gsm8k", "train") if offline else datasets.load_dataset("openai/gsm8k", "main", split="train")
        return [[{"role": "user", "content": q.strip()}, {"role": "assistant", "content": a.strip()}]
                for q, a in zip(ds["question"], ds["answer"])]
    if name == "tulu":
        if offline:
            raise data.DataError("tulu is hub only (allenai/tulu-v2-sft-mixture); use it at the paper profile")
        ds = datasets.load_dataset(data.spec("tulu").hub, split="train")
        return [[{"role": m["role"], "content": m["content"]} for m in ms if m["role"] in ("user", "assistant")]
                for ms in ds["messages"]]
    raise data.DataError(f"unknown instruction source {name!r}; allowed: {', '.join(SFT_SOURCES)}")


def sft_sources(cfg: Config) -> dict[str, dict[str, list]]:
    """{source: {"train": [...], "val": [...], "test": [...]}} of chat dialogues (see the module doc)."""
    offline = profiles.get_profile(cfg.profile).offline
    out = {}
    for name in cfg.sft_data:
        dia = _source_dialogues(name, offline)
        perm = list(range(len(dia)))
        random.Random(HELDOUT_SEED).shuffle(perm)
        h = min(cfg.heldout_per_source, len(dia) // 2)
        held = [dia[i] for i in perm[:h]]
        out[name] = {"val": held[: h // 2], "test": held[h // 2:],
                     "train": [dia[i] for i in perm[h:h + cfg.train_per_source]]}
    return out


def train_mix(sources: dict, seed: int) -> list[list[dict]]:
    mix = [m for s in sources.values() for m in s["train"]]
    random.Random(seed).shuffle(mix)
    return mix


def chat_template_for(tokenizer) -> str:
    """The project's chat template, with the tokenizer's own eos after each response."""
    eos = tokenizer.eos_token or "<|endoftext|>"
    return models.CHAT_TEMPLATE.replace("<|endoftext|>", eos)


def prepare_tokenizer(tokenizer):
    if not tokenizer.chat_template or "{% generation %}" not in tokenizer.chat_template:
        tokenizer.chat_template = chat_template_for(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenize_dialogues(tokenizer, dialogues: list[list[dict]], max_len: int) -> list[dict]:
    """input_ids + assistant_masks (1 on response tokens), cut to ``max_len``; dialogues with no
    response token inside the cut are dropped."""
    out = []
    for msgs in dialogues:
        enc = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, mask = list(enc["input_ids"])[:max_len], list(enc["assistant_masks"])[:max_len]
        if any(mask[1:]):
            out.append({"input_ids": ids, "assistant_masks": mask})
    return out
