"""Chapter 01's metrics: the response perplexity (the ID metric), the lm-eval benchmarks,
AlpacaEval, the chance levels, and the summary over fine-tuning seeds.

::

    from coft_utils.chapters import instruct_eval
    r = instruct_eval.response_perplexity(model, toks, pad_id=tok.pad_token_id)  # ppl, loss, n_tokens, loss_se
    m = instruct_eval.id_eval(model, tok, heldout, cfg)       # val/test response ppl, overall and per source
    b = instruct_eval.bench_eval(model, tok, cfg)             # {benchmark}/acc, acc_norm, s.e.; avg_acc(_norm)
    instruct_eval.chance_levels(cfg)                          # uniform guessing on the items evaluated
    instruct_eval.summarize(out["base"], out["tuned"], cfg)   # out["summary"]: seed means, CIs, min/max
    instruct_eval.alpacaeval_status(cfg)      # "AlpacaEval skipped: no judge configured (...)" or what runs
    instruct_eval.alpacaeval_preflight(cfg)   # before any work: a judge needs the package (and its API key)
    a = instruct_eval.alpacaeval(model, tok, cfg, out_dir)   # win rates through the alpaca_eval package

AlpacaEval (the paper's headline metric, Springer et al. 2025 Fig. 2: OLMo-1B at 3T tokens about 3
points below 2.3T) runs only when ``alpacaeval_judge`` names an annotator config of the
``alpaca_eval`` package (``pip install coft-utils[paper]``), e.g. ``weighted_alpaca_eval_gpt4_turbo``
(AlpacaEval 2.0's default; it needs ``OPENAI_API_KEY``). The instructions and the reference
outputs (AlpacaEval 2.0's GPT-4 Turbo baseline) are the 805 rows of the hub file
``tatsu-lab/alpaca_eval``/``alpaca_eval_gpt4_baseline.json`` (the first ``alpacaeval_limit``; 0 =
all), read with ``hf_hub_download`` (so also from the hub cache offline; the data set's loading
script, which ``datasets`` 5 no longer runs, is not used), and passed to ``alpaca_eval.evaluate``
as ``reference_outputs``. The responses are greedy, batched, at most
``alpacaeval_max_new_tokens`` tokens. Without a judge it is skipped with
:data:`ALPACAEVAL_SKIPPED`, printed and shown on the page; with a judge but without the package,
:func:`alpacaeval_preflight` stops the run before any training.

Response perplexity = exp(total NLL / number of assistant tokens) over the held-out dialogues,
token-weighted, with sequences cut to ``max_seq_len`` tokens (the same cut as training); its
standard error (``*_loss_se``, of the log-perplexity) is the ratio estimator's over dialogues.

:func:`summarize` and :func:`chance_levels` live here rather than in :mod:`.instruct_report`
because :func:`coft_utils.chapters.instruct.collect` builds ``out["summary"]`` and ``out["chance"]``
with them and the experiment never imports its report (the report re-exports ``summarize``).
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from ..foundation import data, evaluate

if TYPE_CHECKING:
    from .instruct import Config

__all__ = ["response_perplexity", "bench_eval", "id_eval", "alpacaeval", "alpacaeval_status", "alpacaeval_preflight",
           "AlpacaEvalError", "ALPACAEVAL_SKIPPED", "ALPACAEVAL_HUB", "summarize", "chance_levels"]

ALPACAEVAL_SKIPPED = ("AlpacaEval skipped: no judge configured (set -p alpacaeval_judge "
                      "weighted_alpaca_eval_gpt4_turbo, or another alpaca_eval annotator config; needs OPENAI_API_KEY)")
# the AlpacaEval 2.0 instructions with the reference (GPT-4 Turbo) outputs: hub data set and file
# (tatsu-lab/alpaca_eval; the file its loading script names for "alpaca_eval_gpt4_baseline", 805 rows)
ALPACAEVAL_HUB = ("tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline.json")
# judge name prefix -> the API key its alpaca_eval annotator config reads
_JUDGE_KEYS = (("claude", "ANTHROPIC_API_KEY"), ("", "OPENAI_API_KEY"))


class AlpacaEvalError(RuntimeError):
    """AlpacaEval was asked for (a judge is configured) but cannot run; raised before any work."""


def response_perplexity(model, tokenized: list[dict], batch_size: int = 16, pad_id: int = 0) -> dict:
    """Token-weighted perplexity of the assistant tokens (next-token NLL where the mask is 1), and
    ``loss_se``: the standard error of the mean NLL (= of the log-perplexity), the ratio estimator's
    over the dialogues (NaN with fewer than two)."""
    import torch
    total, count = 0.0, 0
    seq_nll, seq_n = [], []
    was = model.training
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(tokenized), batch_size):
            chunk = tokenized[i:i + batch_size]
            L = max(len(c["input_ids"]) for c in chunk)
            ids = torch.full((len(chunk), L), pad_id, dtype=torch.long)
            att = torch.zeros((len(chunk), L), dtype=torch.long)
            msk = torch.zeros((len(chunk), L), dtype=torch.bool)
            for j, c in enumerate(chunk):
                n = len(c["input_ids"])
                ids[j, :n] = torch.tensor(c["input_ids"])
                att[j, :n] = 1
                msk[j, :n] = torch.tensor(c["assistant_masks"], dtype=torch.bool)
            nll, cnt = evaluate.masked_nll(model, ids, msk, attention_mask=att, reduction="sequence")
            seq_nll.extend(float(x) for x in nll)
            seq_n.extend(int(x) for x in cnt)
            total += float(nll.sum())
            count += int(cnt.sum())
    model.train(was)
    loss = total / max(count, 1)
    N = len(seq_n)
    if N >= 2 and count > 0 and math.isfinite(loss):
        xbar = count / N
        se = math.sqrt(sum((y - loss * x) ** 2 for y, x in zip(seq_nll, seq_n)) / (N * (N - 1))) / xbar
    else:
        se = float("nan")
    return {"loss": loss, "ppl": math.exp(loss) if math.isfinite(loss) and loss < 700 else math.inf,
            "n_tokens": count, "loss_se": se}



def bench_eval(model, tok, cfg: Config) -> dict:
    from ..foundation import lmeval_tasks
    r = lmeval_tasks.evaluate(model, tok, cfg.benchmarks, limit=cfg.bench_limit or None,
                              batch_size=cfg.eval_batch_size, local=cfg.bench_local,
                              max_length=cfg.eval_max_length or None)
    sc = r["scores"]
    flat = {}
    for b, v in sc.items():
        for k in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr", "n"):
            flat[f"{b}/{k}"] = v[k]
    flat["avg_acc"] = sum(v["acc"] for v in sc.values()) / len(sc)
    flat["avg_acc_norm"] = sum(v["acc_norm"] for v in sc.values()) / len(sc)
    # standard error of an average of independent benchmark means
    flat["avg_acc_stderr"] = math.sqrt(sum(v["acc_stderr"] ** 2 for v in sc.values())) / len(sc)
    flat["avg_acc_norm_stderr"] = math.sqrt(sum(v["acc_norm_stderr"] ** 2 for v in sc.values())) / len(sc)
    flat["lm_eval"] = r["lm_eval"]
    return flat


def id_eval(model, tok, heldout: dict, cfg: Config, prefix: str = "") -> dict:
    """Response perplexity on the held-out ``val`` and ``test`` halves, overall and per source."""
    out = {}
    for part in ("val", "test"):
        allt = []
        for src, toks in heldout[part].items():
            r = response_perplexity(model, toks, batch_size=16, pad_id=tok.pad_token_id or 0)
            out[f"{prefix}{part}_ppl/{src}"] = r["ppl"]
            allt.extend(toks)
        r = response_perplexity(model, allt, batch_size=16, pad_id=tok.pad_token_id or 0)
        out[f"{prefix}{part}_ppl"], out[f"{prefix}{part}_loss"], out[f"{prefix}{part}_tokens"] = r["ppl"], r["loss"], r["n_tokens"]
        out[f"{prefix}{part}_loss_se"] = r["loss_se"]
    return out



def _metrics(cfg: Config) -> list[str]:
    return ["avg_acc", "avg_acc_norm", "test_ppl"] + [f"{b}/{m}" for b in cfg.benchmarks for m in ("acc", "acc_norm")]


def summarize(base, tuned, cfg: Config):
    """One row per (checkpoint, stage). Tuned: the mean over seeds of every metric, its 95 %
    t-interval half-width over seeds (``*_ci``; NaN with one seed), min and max over seeds
    (``*_min``/``*_max``), ``n_seeds``, and the mean lm-eval standard error (``*_stderr``). Base:
    its value, ``*_ci`` = 1.96 lm-eval s.e. (items) for the averages (test ppl: from the
    ratio-estimator s.e. of its log), min = max = the value."""
    import pandas as pd
    from scipy import stats
    from .instruct_panel import PANEL_METRICS
    from .instruct_panel import metrics as panel_metrics
    rows = []
    pm = [m for m in panel_metrics(cfg) if m in base]  # the panel's (instruct_panel), where recorded
    mets = _metrics(cfg) + pm
    for _, r in base.iterrows():
        row = {"checkpoint": r["checkpoint"], "tokens": r["tokens"], "stage": "base", "n_seeds": 0,
               "best_lr": float("nan")}
        for m in mets:
            row[m], row[f"{m}_min"], row[f"{m}_max"] = r[m], r[m], r[m]
            row[f"{m}_ci"] = float("nan")
        for m in ("avg_acc", "avg_acc_norm"):
            row[f"{m}_stderr"] = r[f"{m}_stderr"]
            row[f"{m}_ci"] = 1.96 * r[f"{m}_stderr"]
        se = r.get("test_loss_se", float("nan"))
        row["test_ppl_ci"] = r["test_ppl"] * 1.96 * se if se is not None and math.isfinite(se) else float("nan")
        for m in pm:  # the panel: 1.96 s.e. (accuracies: binomial; perplexities: from the s.e. of the log)
            se_col, scale = PANEL_METRICS[m][:2]
            se = r.get(se_col, float("nan"))
            se = float(se) if se is not None and se == se else float("nan")
            row[f"{m}_ci"] = 1.96 * se * (r[m] if scale == "log" else 1.0)
        rows.append(row)
    if len(tuned):
        for ck, g in tuned.groupby("checkpoint", sort=False):
            n = len(g)
            q = float(stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")
            row = {"checkpoint": ck, "tokens": g["tokens"].iloc[0], "stage": "tuned", "n_seeds": n,
                   "best_lr": g["lr"].iloc[0]}
            for m in mets:
                x = g[m].astype(float)
                # a diverged seed (NaN) makes the mean NaN: shown, never averaged away
                row[m], row[f"{m}_min"], row[f"{m}_max"] = x.mean(skipna=False), x.min(skipna=False), x.max(skipna=False)
                row[f"{m}_ci"] = q * x.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
            for m in ("avg_acc", "avg_acc_norm"):
                row[f"{m}_stderr"] = g[f"{m}_stderr"].mean()
            row["n_diverged"] = int(g["diverged"].fillna(False).astype(bool).sum()) if "diverged" in g else 0
            rows.append(row)
    df = pd.DataFrame(rows)
    return df.sort_values(["stage", "tokens"]).reset_index(drop=True) if len(df) else df


def chance_levels(cfg: Config) -> dict:
    """Expected accuracy of a uniform guess on the items evaluated: mean of 1/(number of choices)."""
    from ..foundation import lmeval_tasks
    out = {}
    for b in cfg.benchmarks:
        if not cfg.bench_local:  # paper: hub tasks; no local file is read
            out[b] = 1 / lmeval_tasks.N_CHOICES[b] if b in lmeval_tasks.N_CHOICES else float("nan")
            continue
        try:
            docs = lmeval_tasks.normalized_docs(b)
        except data.DataError:  # no local file (e.g. sciq): the chance level when every item has n choices
            out[b] = 1 / lmeval_tasks.N_CHOICES[b] if b in lmeval_tasks.N_CHOICES else float("nan")
            continue
        docs = docs[: cfg.bench_limit] if cfg.bench_limit else docs
        out[b] = sum(1 / len(d.get("choices", d.get("options"))) for d in docs) / len(docs)
    vals = [v for v in out.values() if math.isfinite(v)]
    out["avg"] = sum(vals) / len(vals) if vals else float("nan")
    return out



# --------------------------------------------------------------------------- AlpacaEval (optional)
def alpacaeval_status(cfg: Config) -> str:
    """What happens to AlpacaEval in this run, as one line for the log and the page."""
    if not cfg.alpacaeval_judge:
        return ALPACAEVAL_SKIPPED
    n = f"the first {cfg.alpacaeval_limit}" if cfg.alpacaeval_limit else "all 805"
    return (f"AlpacaEval runs with the judge {cfg.alpacaeval_judge!r} on {n} instructions of "
            f"{ALPACAEVAL_HUB[0]} (greedy, at most {cfg.alpacaeval_max_new_tokens} new tokens)")


def _judge_key(judge: str) -> str:
    return next(k for pre, k in _JUDGE_KEYS if judge.lower().startswith(pre))


def alpacaeval_preflight(cfg: Config) -> None:
    """Before any work: with a judge configured, the ``alpaca_eval`` package must import and the
    judge's API key must be set (:class:`AlpacaEvalError` names what is missing). No judge: nothing."""
    if not cfg.alpacaeval_judge:
        return
    try:
        import alpaca_eval  # noqa: F401
    except ImportError as e:
        raise AlpacaEvalError(f"alpacaeval_judge = {cfg.alpacaeval_judge!r} is set but the alpaca_eval package is not "
                              "installed: pip install 'coft-utils[paper]' (or pip install alpaca-eval), or set "
                              "alpacaeval_judge to None to skip AlpacaEval. Nothing was run.") from e
    key = _judge_key(cfg.alpacaeval_judge)
    if not os.environ.get(key):
        raise AlpacaEvalError(f"alpacaeval_judge = {cfg.alpacaeval_judge!r} needs the environment variable {key} "
                              "(the judge's API key), which is not set. Nothing was run.")


def _reference(limit: int) -> list[dict]:
    """The AlpacaEval rows (instruction, reference output, generator, dataset) from the hub file
    (read through the hub cache when offline)."""
    import json
    from huggingface_hub import hf_hub_download
    path = hf_hub_download(ALPACAEVAL_HUB[0], ALPACAEVAL_HUB[1], repo_type="dataset")
    with open(path) as fh:
        rows = json.load(fh)
    return rows[:limit] if limit else rows


def generate(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy responses to single-turn ``prompts`` through the chat template, left-padded batches."""
    import torch
    side = tok.padding_side
    tok.padding_side = "left"
    outs = []
    was = model.training
    model.eval()
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                             tokenize=False) for p in prompts[i:i + batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            with torch.inference_mode():
                g = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            outs.extend(tok.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True).strip() for row in g)
    finally:
        tok.padding_side = side
        model.train(was)
    return outs


def alpacaeval(model, tok, cfg: Config, out_dir=None) -> dict:
    """Win rates of ``model`` from ``alpaca_eval.evaluate`` with the annotator ``cfg.alpacaeval_judge``
    against the package's default reference outputs (see the module doc); the outputs and the
    judge's annotations are kept in ``out_dir`` when given."""
    alpacaeval_preflight(cfg)
    import alpaca_eval
    ref = _reference(cfg.alpacaeval_limit)
    ins = [r["instruction"] for r in ref]
    resp = generate(model, tok, ins, cfg.alpacaeval_max_new_tokens, batch_size=min(cfg.eval_batch_size, 32))
    outs = [{"instruction": i, "output": o, "generator": "coft", **({"dataset": r["dataset"]} if "dataset" in r else {})}
            for i, o, r in zip(ins, resp, ref)]
    df, _ = alpaca_eval.evaluate(model_outputs=outs, reference_outputs=ref,
                                 annotators_config=cfg.alpacaeval_judge, name="coft",
                                 output_path=str(out_dir) if out_dir else None, precomputed_leaderboard=None,
                                 is_return_instead_of_print=True, max_instances=len(outs))
    row = df.loc["coft"] if "coft" in df.index else df.iloc[0]
    get = lambda k: float(row[k]) if k in row and row[k] is not None else math.nan  # noqa: E731
    return {"alpacaeval_win_rate": get("win_rate"), "alpacaeval_win_rate_se": get("standard_error"),
            "alpacaeval_lc_win_rate": get("length_controlled_winrate"), "alpacaeval_n": len(outs),
            "alpacaeval_judge": cfg.alpacaeval_judge,
            "alpacaeval_mean_len": sum(len(o) for o in resp) / max(len(resp), 1)}
