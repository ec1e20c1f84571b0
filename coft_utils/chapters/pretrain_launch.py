"""Script entry point of the pre-training suite, for one or several processes.

    python -m coft_utils.chapters.pretrain_launch --profile smoke --schedule cosine
    python -m coft_utils.chapters.pretrain_launch --profile cpu --schedule all --workers 2      # 2 worker processes
    accelerate launch --num_processes 2 -m coft_utils.chapters.pretrain_launch --profile cpu   # DDP, e.g. GPUs
    torchrun --nproc_per_node 2 -m coft_utils.chapters.pretrain_launch --profile smoke         # 2 CPU procs (gloo)
    python -m coft_utils.chapters.pretrain_data prepare --profile paper                         # paper: tokenize C4 once,
    accelerate launch --config_file coft_utils/configs/accelerate_ddp.yaml \
        -m coft_utils.chapters.pretrain_launch --profile paper                                  # then train on 8 GPUs

Options: ``--seed N``, ``--overrides '{"n_budgets": 2}'`` (JSON), ``--schedule all`` (every
schedule; in one process their independent jobs share the ``workers`` pool), ``--workers N``
(the config's ``workers``: independent jobs on N processes of one thread each; ignored under a
distributed launcher, where every rank runs every job together), ``--no-progress``. The global
batch (``batch_size``) does not depend on the number of processes: each takes its share of a
step's rows in ``micro_batch_size`` micro-batches (gradient accumulation); rank 0 alone makes the
tokenizer and the token cache, the other ranks wait for them and map the same file. The
process group is set up by ``accelerate`` from the launcher's environment; this script has no
process-group code of its own. Prints one JSON line per schedule.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--schedule", default="cosine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overrides", default="{}", help="JSON dict of config overrides")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: the profile's)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    from coft_utils.chapters import pretrain
    over = json.loads(a.overrides)
    if a.workers is not None:
        over["workers"] = a.workers
    scheds = pretrain.SCHEDULES if a.schedule == "all" else (a.schedule,)
    cfgs = [pretrain.resolve(a.profile, s, a.seed, over) for s in scheds]
    res = pretrain.train_suites(cfgs, progress=not a.no_progress)
    from accelerate import PartialState
    if PartialState().is_main_process:
        for cfg in cfgs:
            series = res[(cfg.schedule, cfg.peak_lr())]
            print(json.dumps({"schedule": cfg.schedule, "series": series.name, "key": series.meta["key"],
                              "peak_lr": cfg.peak_lr(), "checkpoints": [c.path for c in series]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
