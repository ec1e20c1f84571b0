"""Command line of chapter 01: run every unit of the experiment (filling the results store, also
under ``accelerate launch``), then print the summary table and the verdicts.

::

    python -m coft_utils.chapters.instruct_launch --profile smoke [--seed N] [-p KEY VALUE ...]
    accelerate launch --config_file coft_utils/configs/accelerate_fsdp_instruct.yaml \\
        -m coft_utils.chapters.instruct_launch --profile paper
    python -m coft_utils run 01_instruction_tuning --profile paper     # then render the chapter

``python -m coft_utils.chapters.instruct`` runs the same command line. ``-p`` values are parsed
as YAML, e.g. ``-p series amber`` or ``-p sft_data '[tulu]'``.
"""
from __future__ import annotations

import argparse
import os

from ..foundation import profiles
from .instruct import CHAPTER, run
from .instruct_report import claim_verdict, table_summary
from .instruct_sft import _is_main

__all__ = ["main"]


# --------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    """``python -m coft_utils.chapters.instruct_launch --profile paper [-p key value ...]`` (also under ``accelerate launch``)."""
    ap = argparse.ArgumentParser(prog="python -m coft_utils.chapters.instruct_launch", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default=profiles.DEFAULT_PROFILE, choices=list(profiles.PROFILES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="override a parameter (VALUE parsed as YAML)")
    a = ap.parse_args(argv)
    import yaml
    overrides = {k: yaml.safe_load(v) for k, v in a.param}
    cfg = profiles.resolve(CHAPTER, a.profile, overrides, seed=a.seed)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # rank 0 evaluates while the others wait: a long collective timeout (NCCL's default is 10 min)
        import datetime
        import torch
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                    timeout=datetime.timedelta(hours=6))
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    out = run(cfg, progress=_is_main())
    if _is_main():
        print(table_summary(out, cfg).to_string())
        cv = claim_verdict(out, cfg)
        print(cv["sentence"])
        for k in ("acc", "acc_norm", "id"):
            print(f"{k}: {cv[k]['text']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
