"""Chapter 01's instruction data: the dialogue sources, the held-out split, the chat template and
the tokenized dialogues.

::

    from coft_utils.chapters import instruct_data
    src = instruct_data.sft_sources(cfg)          # {source: {"train": [...], "val": [...], "test": [...]}}
    mix = instruct_data.train_mix(src, seed=0)    # every training pool, shuffled by the fine-tuning seed
    tok = instruct_data.prepare_tokenizer(tok)    # the project's chat template ({% generation %}), a pad token
    toks = instruct_data.tokenize_dialogues(tok, src["gsm8k"]["val"], 512)   # input_ids + assistant_masks
    instruct_data.hh_to_messages("\\n\\nHuman: hi\\n\\nAssistant: hello")  # chat messages (or None)

Where the data come from: :func:`data_source` — ``"local"`` (``../shared/data``, through
:func:`coft_utils.foundation.data.load`, sha256-verified) at the offline profiles, ``"hub"`` at
``paper`` (and wherever :func:`coft_utils.foundation.hubdata.source_for` says so): then every set is
read from its hub id through ``hubdata.load(name, split, source="hub")`` and nothing reads
``../shared/data``. Hub ids (the paper's SFT set is Anthropic-HH, Springer et al. 2025 §2):
``hh_rlhf`` = ``Anthropic/hh-rlhf`` train (160,800 pairs, all four subsets), ``tulu`` =
``allenai/tulu-v2-sft-mixture`` train, ``gsm8k`` = ``openai/gsm8k`` main train (7,473).
``alpaca_seed_tasks`` exists only locally (an error names it at ``paper``).

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

__all__ = ["HELDOUT_SEED", "SFT_SOURCES", "HUB_SOURCES", "LOCAL_SOURCES", "data_source", "hh_to_messages",
           "sft_sources", "train_mix", "chat_template_for", "prepare_tokenizer", "tokenize_dialogues"]

HELDOUT_SEED = 20250325
SFT_SOURCES = ("hh_rlhf", "alpaca_seed_tasks", "gsm8k", "tulu")
HUB_SOURCES = ("hh_rlhf", "gsm8k", "tulu")  # the sources with a hub id (read through hubdata at paper)
LOCAL_SOURCES = ("hh_rlhf", "alpaca_seed_tasks", "gsm8k")  # the sources with a file in ../shared/data


def data_source(profile: str) -> str:
    """``"local"`` or ``"hub"``: where chapter 01 reads its instruction data at ``profile``
    (offline profiles: local; otherwise :func:`coft_utils.foundation.hubdata.source_for`)."""
    if profiles.get_profile(profile).offline:
        return "local"
    from ..foundation import hubdata
    return hubdata.source_for(profile)


def _hub_load(name: str, split: str):
    """One split of a hub set, by our registry name, through hubdata (the hub, or its local cache
    when offline): the repository's own files, never ``load_dataset(hub_id)``."""
    from ..foundation import hubdata
    return hubdata.load(name, split, source="hub")


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


def _source_dialogues(name: str, source: str) -> list[list[dict]]:
    if name not in SFT_SOURCES:
        raise data.DataError(f"unknown instruction source {name!r}; allowed: {', '.join(SFT_SOURCES)}")
    hub = source == "hub"
    if hub and name not in HUB_SOURCES:
        raise data.DataError(f"instruction source {name!r} has no hub id (local only); allowed from the hub: "
                             f"{', '.join(HUB_SOURCES)}")
    if not hub and name not in LOCAL_SOURCES:
        raise data.DataError(f"{name} is hub only ({data.spec(name).hub}); use it at the paper profile")
    if name == "hh_rlhf":
        ds = _hub_load("hh_rlhf", "train") if hub else data.load("hh_rlhf", "test")
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
        ds = _hub_load("gsm8k", "train") if hub else data.load("gsm8k", "train")
        return [[{"role": "user", "content": q.strip()}, {"role": "assistant", "content": a.strip()}]
                for q, a in zip(ds["question"], ds["answer"])]
    # tulu: keep user/assistant turns; a dialogue must open with the user and end with the assistant
    ds = _hub_load("tulu", "train")
    out = []
    for ms in ds["messages"]:
        m = [{"role": x["role"], "content": x["content"]} for x in ms if x["role"] in ("user", "assistant")]
        if m and m[0]["role"] == "user" and m[-1]["role"] == "assistant" and m[-1]["content"].strip():
            out.append(m)
    return out


def sft_sources(cfg: Config) -> dict[str, dict[str, list]]:
    """{source: {"train": [...], "val": [...], "test": [...]}} of chat dialogues (see the module doc)."""
    source = data_source(cfg.profile)
    out = {}
    for name in cfg.sft_data:
        dia = _source_dialogues(name, source)
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
