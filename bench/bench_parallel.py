"""Worker processes (coft_utils.foundation.parallel) on the pre-training suite's own units.

``parallel.speedup`` = wall time of one set of independent pre-training units trained with
1 worker (in this process, one torch thread) / the same units with 2 workers (one torch thread
each), measured in the same run. The units are real suite jobs through
``pretrain.train_suites``: smoke-size OLMo (olmo-pico, 512 BPE, 8 x 64-token blocks), one
cosine run of ``STEPS`` steps per seed, ``UNITS`` seeds (equal sizes, so 2 workers can at best
halve the time), each trained from scratch in a fresh runs folder, checkpoint export and
held-out evaluation included. The worker pool and this process are warmed up first (imports),
the rounds alternate 1-2-2-1 (the machine is shared) and the medians count.
``parallel.results_equal``: both ways give the same validation perplexities.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

UNITS, STEPS = 4, 300


def _cfgs(steps: int, units: int):
    from coft_utils.chapters import pretrain
    over = {"n_budgets": 1, "min_budget": float(steps * 8 * 64), "val_blocks": 16}
    return [pretrain.resolve("smoke", "cosine", seed=s, overrides=over) for s in range(units)]


def _train(cfgs, workers: int) -> tuple[float, list]:
    from coft_utils.chapters import pretrain
    with tempfile.TemporaryDirectory() as d:
        old = os.environ.get("COFT_RUNS_DIR")
        os.environ["COFT_RUNS_DIR"] = d
        try:
            t = time.perf_counter()
            res = pretrain.train_suites(cfgs, progress=False, workers=workers)
            wall = time.perf_counter() - t
        finally:
            if old is None:
                os.environ.pop("COFT_RUNS_DIR", None)
            else:
                os.environ["COFT_RUNS_DIR"] = old
        ppl = [r["val_ppl"] for s in res.values() for r in pretrain.load_records(s)]
    return wall, ppl


def run(quick: bool = False) -> dict:
    from coft_utils.foundation import parallel
    from coft_utils.chapters import pretrain_data
    cfgs = _cfgs(STEPS, UNITS)
    tok = pretrain_data.get_tokenizer(cfgs[0])
    pretrain_data.token_blocks(cfgs[0], tok)  # the shared inputs exist before any timing
    pretrain_data._val_blocks(cfgs[0], tok)
    warm = _cfgs(5, 2)
    _train(warm, 1)  # imports and first-call costs of this process ...
    _train(warm, 2)  # ... and of the two workers
    t1, t2, p1, p2 = [], [], None, None
    for w in ((1, 2) if quick else (1, 2, 2, 1)):
        wall, ppl = _train(cfgs, w)
        (t1 if w == 1 else t2).append(wall)
        p1, p2 = (ppl, p2) if w == 1 else (p1, ppl)
    parallel.shutdown()
    a, b = statistics.median(t1), statistics.median(t2)
    return {"parallel.speedup": round(a / b, 3), "parallel.wall_1_worker_s": round(a, 2),
            "parallel.wall_2_workers_s": round(b, 2), "parallel.units": UNITS,
            "parallel.unit_tokens": STEPS * cfgs[0].tokens_per_step(),
            "parallel.results_equal": bool(p1 == p2), "parallel.cpus": parallel.default_workers()}
