"""Pre-training loop speed: the suite's training loop vs a bare PyTorch loop, same model and batch.

``pretrain.loop_vs_bare_ratio`` = tokens/s of ``coft_utils.chapters.pretrain_train.train_job`` (accelerate,
LambdaLR, grad clipping, data stream, state saves) / tokens/s of a bare forward/backward/AdamW
loop, both on the ``cpu`` preset's model and batch (random token blocks, so no corpus is
needed), measured in alternating rounds in the same process; the best round of each counts
(the machine is shared). ``pretrain.wsd_vs_cosine_cost_ratio`` = measured training wall time
of the ``cpu`` wsd suite / that of the cosine suite for the same budgets, when both are cached
(else the planned step ratio, flagged by ``pretrain.wsd_vs_cosine_cost_measured = False``).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


class _Tok:  # what train_job needs of a tokenizer
    def __init__(self, n):
        self.n, self.pad_token_id, self.eos_token_id = n, 1, 0

    def __len__(self):
        return self.n


def _bare(cfg, blocks, steps):
    import torch
    from coft_utils.foundation import models
    from coft_utils.chapters import pretrain_train
    model = models.build_model(pretrain_train._model_config(cfg, _Tok(cfg.vocab_size)), seed=cfg.seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay,
                            foreach=True)
    B = cfg.batch_size
    x0 = torch.from_numpy(blocks[:B].astype(np.int64))
    loss = model(input_ids=x0, labels=x0).loss  # warm-up step (not timed)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    t = time.perf_counter()
    for k in range(steps):
        x = torch.from_numpy(blocks[(k % 8) * B:(k % 8 + 1) * B].astype(np.int64))
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * cfg.tokens_per_step() / (time.perf_counter() - t)


def _suite_loop(cfg, blocks, steps, acc):
    from coft_utils.chapters import pretrain_plan, pretrain_train
    stream = pretrain_train.BlockStream(blocks, cfg.batch_size, cfg.seed)
    with tempfile.TemporaryDirectory() as d:
        warm = pretrain_plan.Job("warm", "cosine", 0, 1, "cosine", steps + 1)
        pretrain_train.train_job(cfg, warm, Path(d), stream, _Tok(cfg.vocab_size), acc, progress=False)
        job = pretrain_plan.Job("bench", "cosine", 0, steps, "cosine", steps)
        info = pretrain_train.train_job(cfg, job, Path(d), stream, _Tok(cfg.vocab_size), acc, progress=False)
    return steps * cfg.tokens_per_step() / info["own_wall_s"]


def run(quick: bool = False) -> dict:
    import torch
    from coft_utils.chapters import pretrain, pretrain_plan, pretrain_train
    cfg = pretrain.resolve("cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    acc = pretrain_train._accelerator(cfg)
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, cfg.vocab_size, size=(16 * cfg.batch_size, cfg.seq_len), dtype=np.uint16)
    steps = 20 if quick else 40
    rounds = 2 if quick else 4
    suite, bare = [], []
    for _ in range(rounds):
        bare.append(_bare(cfg, blocks, steps))
        suite.append(_suite_loop(cfg, blocks, steps, acc))
    out = {"pretrain.loop_tokens_per_s": round(max(suite)), "pretrain.bare_tokens_per_s": round(max(bare)),
           "pretrain.loop_vs_bare_ratio": round(max(suite) / max(bare), 3),
           "pretrain.wsd_vs_cosine_planned_step_ratio": round(1 / pretrain_plan.cost_ratio(cfg), 3)}
    cos, wsd = pretrain.cached_suite("cpu", "cosine"), pretrain.cached_suite("cpu", "wsd")
    if cos is not None and wsd is not None:
        out["pretrain.wsd_vs_cosine_cost_ratio"] = round(wsd.meta["total_train_wall_s"] / cos.meta["total_train_wall_s"], 3)
        out["pretrain.wsd_vs_cosine_cost_measured"] = True
    else:
        out["pretrain.wsd_vs_cosine_cost_ratio"] = out["pretrain.wsd_vs_cosine_planned_step_ratio"]
        out["pretrain.wsd_vs_cosine_cost_measured"] = False
    return out
