"""``make bench``: speed and memory ratios, each against a baseline measured in the same run.

Every ``bench/bench_*.py`` module defines ``run(quick: bool) -> dict`` returning flat keys such as
``perturb.time_ratio``; this script runs them all (or those named on the command line) and
merges their keys into ``bench/results.json`` together with the machine and the git commit::

    python bench/run.py                 # all benchmarks
    python bench/run.py pretrain        # only bench/bench_pretrain.py
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main(argv: list[str]) -> int:
    from coft_utils.foundation import results
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("-")]
    mods = sorted(HERE.glob("bench_*.py"))
    if names:
        mods = [m for m in mods if m.stem.removeprefix("bench_") in names]
    out_path = HERE / "results.json"
    out = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for m in mods:
        spec = importlib.util.spec_from_file_location(m.stem, m)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        t0 = time.time()
        print(f"[bench] {m.stem} ...", flush=True)
        keys = mod.run(quick=quick)
        keys[f"{m.stem.removeprefix('bench_')}.bench_wall_s"] = round(time.time() - t0, 1)
        for k, v in keys.items():
            print(f"  {k} = {v}")
        out.update(keys)
    out["_meta"] = {"git": results.git_commit(), "device": results.device_info(),
                    "packages": results.package_versions(),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1, sort_keys=True))
    os.replace(tmp, out_path)
    print(f"[bench] wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
