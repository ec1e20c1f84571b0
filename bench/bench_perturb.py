"""Cost of a perturbed evaluation against a plain one, measured in the same run.

``perturb.time_ratio``: wall time of (perturb + evaluate + restore) divided by that
of a plain evaluation of the same model on the same held-out tokens; the two are interleaved
(plain, perturbed, perturbed, plain, ...) and the ratio is the median over adjacent pairs, so
the load of a shared machine hits both alike (``time_ratio_of_medians`` is also reported).

``perturb.memory_ratio``: peak resident memory of a sweep (one Perturber, i.e. one backup of the
weights, and several (γ, seed) points) divided by that of a plain evaluation. Each is measured in
its own fresh subprocess, after the imports: the peak-RSS counter (VmHWM) is reset through
``/proc/self/clear_refs`` (falling back to the RSS at that moment), then the model is loaded
and run, and the increase of the peak over the RSS after the imports is taken (median of three such
processes per mode; one with ``quick``). So the ratio
counts the model weights, the backup copy, the noise tensors and the activations, not the
interpreter and the libraries. On a GPU the same is done with ``torch.cuda.max_memory_allocated``.

Model: the last checkpoint of the project's cpu suite when it is cached, else a freshly built
olmo-nano (1024 vocabulary) on the same blocks; ``quick`` uses fewer repetitions.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

N_BLOCKS, SEQ_LEN, BATCH = 64, 128, 32


def _model_and_blocks():
    import torch
    from coft_utils.foundation import evaluate, models
    from coft_utils.foundation import results
    # a cached cpu suite (never trained here): runs/suite/<key>/<schedule>/series.json
    for f in sorted(results.runs_dir().glob("suite/*/cosine/series.json")):
        try:
            s = models.get_series(str(f))
            if not s.name.endswith("-cpu"):
                continue
            ck = s.checkpoints[-1]
            model = models.load_model(ck)
            blocks = evaluate.heldout_blocks(models.load_tokenizer(ck), "gutenberg", N_BLOCKS, SEQ_LEN)
            return model, blocks, f"{s.name} {ck.label}"
        except Exception:  # an unreadable cache entry: fall back to a built model
            continue
    model = models.build_model(models.olmo_config("olmo-nano", vocab_size=1024), seed=0).eval()
    g = torch.Generator().manual_seed(0)
    return model, torch.randint(0, 1024, (N_BLOCKS, SEQ_LEN), generator=g), "olmo-nano (built, 1024 vocab)"


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _child(mode: str, n_points: int) -> dict:
    """Run in a fresh process: peak memory above the post-import baseline for ``mode``."""
    import torch
    import transformers  # noqa: F401  (imported before the baseline)
    from coft_utils.foundation import evaluate
    from coft_utils.chapters import perturb
    torch.set_num_threads(1)  # one thread: 2-thread timings of a tiny model are erratic on shared cores
    cuda = torch.cuda.is_available()
    # warm up lazy imports and kernels on a throwaway model, so the baseline holds the libraries
    from coft_utils.foundation import models
    w = models.build_model(models.olmo_config("olmo-pico", vocab_size=512), seed=0).eval()
    evaluate.perplexity(w, torch.zeros(2, 16, dtype=torch.long), 2)
    perturb.Perturber(w).apply(0.1, "warm")
    del w
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    base = _rss_kb("VmRSS")
    model, blocks, what = _model_and_blocks()
    if cuda:
        model, blocks = model.cuda(), blocks.cuda()
        torch.cuda.reset_peak_memory_stats()
    if mode == "plain":
        for _ in range(n_points):
            evaluate.perplexity(model, blocks, BATCH)
    else:
        p = perturb.Perturber(model, scale="init")
        for i in range(n_points):
            with p.perturbed(0.05 * (1 + i % 3), key=("bench", i)):
                evaluate.perplexity(model, blocks, BATCH)
    out = {"peak_kb": _rss_kb("VmHWM") - base, "model": what}
    if cuda:
        out["cuda_peak"] = torch.cuda.max_memory_allocated()
    return out


def run(quick: bool = False) -> dict:
    import torch
    from coft_utils.foundation import evaluate
    from coft_utils.chapters import perturb
    torch.set_num_threads(1)  # one thread: 2-thread timings of a tiny model are erratic on shared cores
    model, blocks, what = _model_and_blocks()
    reps = 8 if quick else 20
    p = perturb.Perturber(model, scale="init")
    evaluate.perplexity(model, blocks, BATCH)  # warm-up
    plain, pert = [], []

    def one_plain():
        t0 = time.perf_counter()
        evaluate.perplexity(model, blocks, BATCH)
        plain.append(time.perf_counter() - t0)

    def one_perturbed(i):
        t0 = time.perf_counter()
        p.apply(0.05, key=("bench", 0.05, i))
        evaluate.perplexity(model, blocks, BATCH)
        p.restore()
        pert.append(time.perf_counter() - t0)

    for i in range(reps):  # alternate the order (ABBA) so drifts of a shared machine cancel
        if i % 2 == 0:
            one_plain(); one_perturbed(i)
        else:
            one_perturbed(i); one_plain()
    t_plain, t_pert = statistics.median(plain), statistics.median(pert)
    # each perturbed run against the plain run next to it in time (same machine load)
    pair_ratio = statistics.median(b / a for a, b in zip(plain, pert))

    n_points = 3 if quick else 6
    mem = {}
    for mode in ("plain", "sweep") * (1 if quick else 3):
        code = (f"import sys, json; sys.path.insert(0, {str(REPO / 'bench')!r}); "
                f"import bench_perturb as b; print('@@' + json.dumps(b._child({mode!r}, {n_points})))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                           env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}, timeout=600)
        line = [l for l in r.stdout.splitlines() if l.startswith("@@")]
        if r.returncode != 0 or not line:
            raise RuntimeError(f"memory child {mode} failed: {r.stderr[-2000:]}")
        mem.setdefault(mode, []).append(json.loads(line[-1][2:]))
    key = "cuda_peak" if "cuda_peak" in mem["plain"][0] else "peak_kb"
    mem = {m: {key: statistics.median(r[key] for r in rs)} for m, rs in mem.items()}  # allocator noise
    weights = sum(t.numel() * t.element_size() for t in model.parameters())
    return {
        "perturb.time_ratio": round(pair_ratio, 3),
        "perturb.time_ratio_of_medians": round(t_pert / t_plain, 3),
        "perturb.memory_ratio": round(mem["sweep"][key] / max(1, mem["plain"][key]), 3),
        "perturb.plain_eval_s": round(t_plain, 4),
        "perturb.perturbed_eval_s": round(t_pert, 4),
        "perturb.plain_peak_mb": round(mem["plain"][key] / (1024 if key == "peak_kb" else 2 ** 20), 1),
        "perturb.sweep_peak_mb": round(mem["sweep"][key] / (1024 if key == "peak_kb" else 2 ** 20), 1),
        "perturb.weights_mb": round(weights / 2 ** 20, 2),
        "perturb.backup_mb": round(p.backup_bytes / 2 ** 20, 2),
        "perturb.bench_model": what,
        "perturb.eval_tokens": int(blocks.numel()),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
