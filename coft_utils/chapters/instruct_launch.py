"""Command line of chapter 01: run every unit of the experiment (filling the results store, also
under ``accelerate launch``), then print the summary table and the verdicts.

::

    python -m coft_utils.chapters.instruct_launch --profile smoke [--seed N] [-p KEY VALUE ...]
    accelerate launch --config_file coft_utils/configs/accelerate_fsdp_instruct.yaml \\
        -m coft_utils.chapters.instruct_launch --profile paper
    python -m coft_utils run 01_instruction_tuning --profile paper     # then render the chapter

``python -m coft_utils.chapters.instruct`` runs the same command line. ``-p`` values are parsed
as YAML, e.g. ``-p series amber`` or ``-p sft_data '[tulu]'``.

Which FSDP config (:func:`fsdp_config`, :data:`FSDP_CONFIGS`; each file carries its memory
arithmetic): OLMo-1B ``accelerate_fsdp_instruct.yaml`` (``OlmoDecoderLayer``), OLMo-2-7B
``accelerate_fsdp_olmo2_7b.yaml`` (``Olmo2DecoderLayer``), Amber ``accelerate_fsdp_amber_7b.yaml``
(``LlamaDecoderLayer``); the 7B ones at per-device batch 4::

    accelerate launch --config_file "$(python -m coft_utils.chapters.instruct_launch --fsdp-config \\
        --profile paper -p series olmo-2-7b-stage1)" -m coft_utils.chapters.instruct_launch \\
        --profile paper -p series olmo-2-7b-stage1 -p batch_size 4

The global batch (``global_batch``, 128 at paper) is reached by gradient accumulation whatever
``num_processes`` is (:func:`coft_utils.chapters.instruct_sft.batch_plan`); ``--fsdp-config``
prints the config path and, on stderr, the split for the config's 8 processes.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..foundation import profiles
from .instruct import CHAPTER, run
from .instruct_report import claim_verdict, table_summary
from .instruct_sft import _is_main

__all__ = ["main", "fsdp_config", "FSDP_CONFIGS"]

# series -> the accelerate FSDP config that fits its full fine-tuning on 8 x 80 GB (configs/)
FSDP_CONFIGS = {"olmo-1b": "accelerate_fsdp_instruct.yaml", "olmo-2-7b-stage1": "accelerate_fsdp_olmo2_7b.yaml",
                "amber": "accelerate_fsdp_amber_7b.yaml"}


def fsdp_config(series: str) -> Path:
    """The FSDP config file for ``series`` (a clear error for a series without one)."""
    if series not in FSDP_CONFIGS:
        raise profiles.ProfileError(f"no FSDP config for series {series!r}; allowed: {', '.join(FSDP_CONFIGS)} "
                                    "(for another series copy the closest one and set its "
                                    "fsdp_transformer_layer_cls_to_wrap to the model's decoder-layer class)")
    return Path(__file__).resolve().parents[1] / "configs" / FSDP_CONFIGS[series]


# --------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    """``python -m coft_utils.chapters.instruct_launch --profile paper [-p key value ...]`` (also under ``accelerate launch``)."""
    ap = argparse.ArgumentParser(prog="python -m coft_utils.chapters.instruct_launch", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default=profiles.DEFAULT_PROFILE, choices=list(profiles.PROFILES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="override a parameter (VALUE parsed as YAML)")
    ap.add_argument("--fsdp-config", action="store_true",
                    help="print the accelerate FSDP config file for the chosen series and exit")
    a = ap.parse_args(argv)
    import yaml
    from ..foundation import safeyaml
    overrides = {k: safeyaml.load(v, f"-p {k}") for k, v in a.param}
    cfg = profiles.resolve(CHAPTER, a.profile, overrides, seed=a.seed)
    if a.fsdp_config:
        from .instruct_sft import batch_plan
        path = fsdp_config(cfg.series)
        n = int(yaml.safe_load(path.read_text()).get("num_processes", 1))
        p = batch_plan(cfg, world=n)
        print(f"{cfg.series}: {n} processes x per-device {p['per_device']} x accumulation {p['grad_accum']} = "
              f"global batch {p['global_batch']}", file=sys.stderr)
        print(path)
        return 0
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
