"""Script entry point of the pre-training suite, for one or several processes.

    python -m coft_utils.pretrain_launch --profile smoke --schedule cosine
    accelerate launch --num_processes 2 -m coft_utils.pretrain_launch --profile cpu   # DDP, e.g. GPUs
    torchrun --nproc_per_node 2 -m coft_utils.pretrain_launch --profile smoke         # 2 CPU procs (gloo)

Options: ``--seed N``, ``--overrides '{"n_budgets": 2}'`` (JSON), ``--schedule all`` (every
schedule in turn), ``--no-progress``. The process group is set up by ``accelerate`` from the
launcher's environment; this script has no process-group code of its own.
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
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    from coft_utils import pretrain
    scheds = pretrain.SCHEDULES if a.schedule == "all" else (a.schedule,)
    for sched in scheds:
        cfg = pretrain.resolve(a.profile, sched, a.seed, json.loads(a.overrides))
        series = pretrain.run_suite(cfg, progress=not a.no_progress)
        from accelerate import PartialState
        if PartialState().is_main_process:
            print(json.dumps({"schedule": sched, "series": series.name, "key": series.meta["key"],
                              "checkpoints": [c.path for c in series]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
