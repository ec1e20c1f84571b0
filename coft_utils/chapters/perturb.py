"""Gaussian parameter perturbation with exact restore, and the sensitivity sweep of chapter 02.

The perturbation is ``θ' = θ + γ·s·ε`` with ``ε ~ N(0, I)`` drawn per tensor, where the scale
``s`` is either the parameter's initialization standard deviation (``scale="init"``: the paper
scales the noise by the initialization covariance) or the tensor's own empirical standard
deviation (``scale="empirical"``: the protocol of the Pythia-70M reproduction report)::

    from coft_utils.chapters import perturb
    from coft_utils.foundation import models, evaluate
    model = models.load_model(ckpt)
    p = perturb.Perturber(model, scale="init", targets="all")     # one backup of the weights
    with p.perturbed(gamma=0.04, key=(ckpt.label, 0.04, 0)):      # noise from (label, γ, seed)
        r = evaluate.perplexity(model, blocks)                     # perturbed model
    # here the weights are bit-for-bit the original again (restored with copy_)

    cfg = profiles.resolve("02_gaussian_sensitivity", "cpu")
    df = perturb.sweep(perturb.load_series(cfg), cfg)              # records in results.Store; resumes
    s = perturb.summarize(df)                                      # mean/std over noise seeds, Δppl
    perturb.scale_verdicts(df, "gutenberg")                        # calibrated tests (coft_utils.foundation.verdicts)

Noise is drawn tensor by tensor from a ``torch.Generator`` seeded with a hash of
``(checkpoint label, γ, noise seed, tensor name)``, so any point of a sweep can be recomputed
alone (on the same device: CUDA and CPU generators give different streams). Float
add-then-subtract is not bit-exact, so the weights are restored from a copy of the original
values of the perturbed tensors, taken once per checkpoint (not per γ) and kept on the CPU when
the model is on a GPU. Tied weights (OLMo's embeddings and output head) are perturbed once.

``targets``: ``"all"`` perturbs every parameter; ``"no_embed_norm"`` leaves the token (and
position) embeddings, the output head and every normalization weight/bias untouched.
Under ``scale="init"`` every perturbed tensor gets the same ``s`` = the model's initialization
standard deviation (``config.initializer_range``, 0.02 for OLMo and Pythia, or the series'
``meta["init_std"]``, or the ``init_std`` parameter): norm gains and biases are initialised to
constants, so they have no init spread of their own; we give them the model-wide ``s`` so that
"all" means an isotropic perturbation in the paper's units (OLMo-1B has no norm parameters at all).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Iterable

from ..foundation import evaluate, models, plots, profiles, results, verdicts
from ..foundation.profiles import param

__all__ = ["Config", "PRESETS", "Perturber", "perturb_", "noise_seed", "select_tensors",
           "load_series", "heldout", "sweep", "summarize", "weight_stats", "verdict", "verdict_table",
           "plot_delta", "plot_absolute", "THEIRS", "EXPERIMENT"]

EXPERIMENT = "02_gaussian_sensitivity"
SCALES = ("init", "empirical")
TARGETS = ("all", "no_embed_norm")
SOURCES = ("gutenberg", "wikitext", "c4")


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Config(profiles.SeriesConfig):
    gammas: tuple[float, ...] = param((0.01, 0.02, 0.04), "perturbation sizes γ", min=0.0)
    n_seeds: int = param(3, "noise seeds per (checkpoint, γ)", min=1, max=100)
    scale: str = param("init", "noise scale s: init std or the tensor's empirical std", choices=SCALES)
    targets: str = param("all", "perturbed tensors", choices=TARGETS)
    compare_gammas: tuple[float, ...] = param((), "γ of a second sweep with the other scale "
                                              "(empty: none)", min=0.0)
    init_std: float = param(0.0, "init std for scale=init (0: the series' meta or config.initializer_range)",
                            min=0.0)
    sources: tuple[str, ...] = param(("gutenberg", "wikitext"), "held-out token sources", choices=SOURCES)
    n_blocks: int = param(64, "held-out blocks per source (at most what each source holds)", min=1,
                          max=1_000_000)
    seq_len: int = param(128, "tokens per held-out block", min=2, max=32768)
    batch_size: int = param(16, "evaluation batch size", min=1, max=16384)
    dtype: str = param("float32", "model dtype", choices=("float32", "bfloat16"))
    threads: int = param(0, "torch CPU threads (0: leave as is)", min=0, max=256)
    workers: int = param(1, "worker processes for the checkpoints (1 thread each; 1: in-process)",
                         min=1, max=64)

    def check(self):
        if "c4" in self.sources and profiles.get_profile(self.profile).offline:
            raise profiles.ProfileError(
                f"parameter 'sources' contains 'c4', which needs the hub (profile 'paper'); profile "
                f"{self.profile!r} is offline; "
                "allowed here: gutenberg, wikitext")
        if len(set(self.gammas)) != len(self.gammas):
            raise profiles.ProfileError(f"parameter 'gammas' has duplicates: {self.gammas}")
        if not self.gammas:
            raise profiles.ProfileError("parameter 'gammas' must list at least one γ")
        if len(set(self.compare_gammas)) != len(self.compare_gammas):
            raise profiles.ProfileError(f"parameter 'compare_gammas' has duplicates: {self.compare_gammas}")
        from ..foundation import evaluate
        for src in self.sources:
            evaluate.check_blocks(src, self.n_blocks, self.seq_len)

    def other_scale(self) -> "Config | None":
        """The comparison sweep's config: the other noise scale, ``compare_gammas``, the first
        (pre-training-domain) source only; None when ``compare_gammas`` is empty."""
        if not self.compare_gammas:
            return None
        other = SCALES[1 - SCALES.index(self.scale)]
        return dataclasses.replace(self, scale=other, gammas=self.compare_gammas, compare_gammas=(),
                                   sources=self.sources[:1])


PRESETS: dict[str, Config] = {
    # tests / CI: a few tiny evaluations
    "smoke": Config(profile="smoke", scale="empirical", gammas=(0.2, 0.8), compare_gammas=(3.2,),
                    n_seeds=2, n_blocks=8, seq_len=64, batch_size=8, threads=1),
    # γ grids from a search on the cpu suite (cosine, 0.25M..8M tokens; see the chapter): with the
    # empirical scale Δppl is monotone for every γ and the U-shape appears from γ ≈ 0.4; with the
    # init scale (0.02) the damage saturates and a U needs γ ≈ 3, with a large seed spread.
    # One torch thread: on 2 shared cores a 2-thread evaluation of this tiny model is 3-8x slower.
    "cpu": Config(profile="cpu", scale="empirical", gammas=(0.05, 0.1, 0.2, 0.4, 0.8),
                  compare_gammas=(0.8, 1.6, 3.2, 6.4), n_seeds=5, n_blocks=128, seq_len=128,
                  batch_size=16, threads=1, workers=2),
    "gpu": Config(profile="gpu", scale="empirical", gammas=(0.025, 0.05, 0.1, 0.2, 0.4, 0.8),
                  compare_gammas=(0.4, 0.8, 1.6, 3.2, 6.4), n_seeds=5, n_blocks=512, seq_len=256,
                  batch_size=32),
    # the paper's protocol: OLMo-1B revisions, noise scaled by the init std, C4 validation in
    # domain, WikiText-2 out of domain (the γ grid is ours); the comparison sweep uses the
    # Pythia-70M report's per-tensor empirical scale.
    "paper": Config(profile="paper", series="olmo-1b", scale="init", gammas=(0.5, 1.0, 2.0, 4.0),
                    compare_gammas=(0.01, 0.02, 0.04), n_seeds=3, sources=("c4", "wikitext"),
                    n_blocks=256, seq_len=1024, batch_size=8),
}

# What others report (labelled as theirs in the book; never mixed with our measurements).
THEIRS = {
    "pythia70m_report": {
        "who": "Pythia-70M reproduction report (noise scaled by each tensor's empirical std)",
        "gamma": 0.04, "source": "WikiText-2",
        "points": [{"tokens": 2e9, "label": "~2B", "delta_ppl": 2.46},
                   {"tokens": 134e9, "label": "~134B", "delta_ppl": 193.86}],
    },
    "paper": ("Springer et al. (2025), Sec. 3.3 / Fig. 3, OLMo-1B intermediate checkpoints with "
              "Gaussian noise scaled by the initialization covariance: for every fixed γ the "
              "increase in C4 perplexity caused by the noise grows monotonically with pre-training "
              "tokens (progressive sensitivity), and the perturbed model's perplexity first falls "
              "then rises, a U-shape whose minimum (inflection point) comes earlier for larger γ."),
}


# --------------------------------------------------------------------------- perturbation
def _check_gamma(gamma) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        try:
            import numpy as np
            if isinstance(gamma, np.number):
                gamma = float(gamma)
            else:
                raise TypeError
        except TypeError:
            raise ValueError(f"gamma must be a number >= 0, got {gamma!r}") from None
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    return gamma


def noise_seed(key, name: str) -> int:
    """A 63-bit generator seed from ``key`` (e.g. (label, γ, seed)) and the tensor name."""
    parts = [repr(float(k)) if isinstance(k, float) else str(k) for k in
             (key if isinstance(key, (tuple, list)) else (key,))]
    h = hashlib.sha256("\x1f".join(parts + [name]).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def _is_embed_or_norm(name: str, p) -> bool:
    n = name.lower()
    if any(k in n for k in ("embed", "wte", "wpe", "lm_head", "embed_out")):
        return True
    return "norm" in n or "ln_" in n or ".ln" in n or (p.dim() == 1 and "bias" not in n and "weight" in n)


def select_tensors(model, targets: str = "all") -> list[tuple[str, object]]:
    """``[(name, parameter)]`` to perturb, tied parameters once (first name)."""
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
    seen, out = set(), []
    tied = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        tied.setdefault(id(p), []).append(name)
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        names = tied[id(p)]
        if targets == "no_embed_norm" and any(_is_embed_or_norm(n, p) for n in names):
            continue
        out.append((name, p))
    return out


def init_std_of(model, series: models.CheckpointSeries | None = None, override: float = 0.0) -> float:
    if override and override > 0:
        return float(override)
    if series is not None and series.meta.get("init_std"):
        return float(series.meta["init_std"])
    v = getattr(model.config, "initializer_range", None)
    if v is None:
        raise ValueError("the model config has no initializer_range; pass init_std")
    return float(v)


class Perturber:
    """Perturbs a model in place and restores it exactly; one backup of the targets, made once."""

    def __init__(self, model, scale: str = "init", targets: str = "all", init_std: float | None = None,
                 backup_device: str | None = None):
        import torch
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        if scale == "init":
            init_std = init_std_of(model, override=init_std or 0.0)
        self.model, self.scale, self.targets = model, scale, targets
        self.tensors = select_tensors(model, targets)
        dev = next(model.parameters()).device
        if backup_device is None:
            backup_device = "cpu"
        self.backup, self.scales = {}, {}
        with torch.no_grad():
            for name, p in self.tensors:
                self.backup[name] = p.detach().to(backup_device, copy=True)
                if scale == "init":
                    self.scales[name] = float(init_std)
                else:
                    s = float(p.detach().float().std()) if p.numel() > 1 else 0.0
                    self.scales[name] = s if math.isfinite(s) else 0.0
        self.device = dev
        self.dirty = False

    @property
    def n_params(self) -> int:
        return sum(p.numel() for _, p in self.tensors)

    @property
    def backup_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.backup.values())

    def apply(self, gamma: float, key) -> None:
        """``θ ← θ + γ·s·ε`` for every target tensor (from the original values)."""
        import torch
        gamma = _check_gamma(gamma)
        if self.dirty:
            self.restore()
        self.dirty = True
        if gamma == 0.0:
            return
        with torch.no_grad():
            for name, p in self.tensors:
                s = self.scales[name]
                if s == 0.0:
                    continue
                g = torch.Generator(device=p.device)
                g.manual_seed(noise_seed(key, name))
                eps = torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype)
                p.add_(eps, alpha=gamma * s)
                del eps

    def restore(self) -> None:
        import torch
        with torch.no_grad():
            params = [p for _, p in self.tensors]
            backups = [self.backup[n] for n, _ in self.tensors]
            if params and all(b.device == p.device for p, b in zip(params, backups)):
                torch._foreach_copy_(params, backups)  # one fused call (bit-exact copy)
            else:
                for p, b in zip(params, backups):
                    p.copy_(b)
        self.dirty = False

    @contextlib.contextmanager
    def perturbed(self, gamma: float, key):
        self.apply(gamma, key)
        try:
            yield self.model
        finally:
            self.restore()


def perturb_(model, gamma: float, key, scale: str = "init", targets: str = "all",
             init_std: float | None = None) -> Perturber:
    """Perturb ``model`` in place; returns the :class:`Perturber` whose ``restore()`` undoes it."""
    _check_gamma(gamma)
    p = Perturber(model, scale=scale, targets=targets, init_std=init_std)
    p.apply(gamma, key)
    return p


# --------------------------------------------------------------------------- series and data
def load_series(cfg: Config) -> models.CheckpointSeries:
    from ..foundation import series
    return series.for_config(cfg, progress=True)


def _c4_ids(tokenizer, n_tokens: int):
    """C4 validation (``allenai/c4``, en) from the hub: the first documents, cached per tokenizer."""
    import numpy as np
    from ..foundation import data
    cache = data.cache_dir() / "heldout" / f"c4-{evaluate.tokenizer_fingerprint(tokenizer)}-{n_tokens}.npy"
    if cache.is_file():
        return np.load(cache)
    import datasets
    ds = datasets.load_dataset("allenai/c4", "en", split="validation", streaming=True)
    ids, eos = [], tokenizer.eos_token_id
    for rec in ds:
        ids.extend(tokenizer(rec["text"], add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
        if len(ids) >= n_tokens:
            break
    arr = np.asarray(ids, dtype=np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, arr)
    return arr


def heldout(tokenizer, source: str, n_blocks: int, seq_len: int):
    """Fixed held-out blocks ``[n_blocks, seq_len]`` (the same for every checkpoint of a series)."""
    if source in evaluate.SOURCES:
        return evaluate.heldout_blocks(tokenizer, source, n_blocks, seq_len)
    if source == "c4":
        import numpy as np
        import torch
        ids = _c4_ids(tokenizer, n_blocks * seq_len * 4)
        total = len(ids) // seq_len
        starts = np.linspace(0, total - 1, n_blocks).round().astype(np.int64) * seq_len
        return torch.from_numpy(np.stack([ids[s:s + seq_len] for s in starts]))
    raise ValueError(f"unknown held-out source {source!r}; allowed: {', '.join(SOURCES)}")


_DATA_NAMES = {"gutenberg": "gutenberg_top100_authors", "wikitext": "wikitext2_tokenized_valid_test"}


# --------------------------------------------------------------------------- the sweep
def _units(series, cfg: Config, ckpt) -> list[dict]:
    base = {"series": series.name, "checkpoint": ckpt.label, "weights": models.identity(ckpt),
            "tokens": float(ckpt.tokens),
            "scale": cfg.scale, "targets": cfg.targets, "init_std": cfg.init_std,
            "n_blocks": cfg.n_blocks, "seq_len": cfg.seq_len, "dtype": cfg.dtype}
    out = []
    for src in cfg.sources:
        out.append({**base, "gamma": 0.0, "noise_seed": 0, "source": src})
        for g in cfg.gammas:
            if g == 0.0:
                continue
            for i in range(cfg.n_seeds):
                out.append({**base, "gamma": float(g), "noise_seed": cfg.seed * cfg.n_seeds + i, "source": src})
    return out


def _sweep_checkpoint(job) -> int:
    """All (γ, seed, source) units of one checkpoint that are not yet in the store: load once,
    perturb once per (γ, seed), evaluate every source, write each record atomically."""
    import torch
    series, cfg, ckpt, todo, store_dir, device, data_names = job
    store = results.Store(EXPERIMENT, cfg.profile, root=store_dir)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    model = models.load_model(ckpt, device=device, dtype=dtype)
    tok = models.load_tokenizer(ckpt, series)
    blocks = {src: heldout(tok, src, cfg.n_blocks, cfg.seq_len) for src in cfg.sources}
    init_std = init_std_of(model, series, cfg.init_std) if cfg.scale == "init" else None
    pert = Perturber(model, scale=cfg.scale, targets=cfg.targets, init_std=init_std)
    # group the units of one perturbation (γ, seed) over sources: perturb once, evaluate all
    groups: dict[tuple, list[dict]] = {}
    for u in todo:
        groups.setdefault((u["gamma"], u["noise_seed"]), []).append(u)
    for (gamma, ns), us in groups.items():
        with pert.perturbed(gamma, key=(ckpt.label, gamma, ns)):
            for u in us:
                t1 = time.perf_counter()
                r = evaluate.perplexity(model, blocks[u["source"]].to(device), cfg.batch_size)
                r["diverged"] = bool(r["diverged"] or not math.isfinite(r["ppl"]))
                r["eval_s"] = round(time.perf_counter() - t1, 4)
                r["init_std_used"] = init_std
                store.write(u, r, config=cfg, data_names=data_names)
    return len(todo)


def sweep(series, cfg: Config, store: results.Store | None = None, progress: bool = True,
          device: str | None = None):
    """Perturb + evaluate every (checkpoint, γ, noise seed) on every source; one record per
    (checkpoint, γ, seed, source) in ``store`` (default ``results.Store(EXPERIMENT, profile)``).

    Finished units are skipped (a killed sweep resumes). A diverged point (inf/NaN loss) is
    recorded with ``diverged=True`` and the sweep goes on. Checkpoints are independent units:
    ``cfg.workers`` > 1 evaluates them in that many processes of one thread each
    (``coft_utils.foundation.parallel``). Returns ``store.frame()`` restricted to this config's units.
    """
    import torch
    from ..foundation import parallel
    series = models.get_series(series)
    store = store or results.Store(EXPERIMENT, cfg.profile)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device is None:
        dev = profiles.get_profile(cfg.profile).device
        device = "cuda" if dev == "auto" and torch.cuda.is_available() else "cpu"
    data_names = [_DATA_NAMES[s] for s in cfg.sources if s in _DATA_NAMES]
    all_units, jobs = [], []
    for ckpt in series:
        units = _units(series, cfg, ckpt)
        all_units += units
        todo = [u for u in units if not store.done(u)]
        if todo:
            jobs.append((series, cfg, ckpt, todo, store.dir, device, data_names))
    workers = 1 if device != "cpu" else min(cfg.workers, max(1, len(jobs)))
    parallel.map_units(_sweep_checkpoint, jobs, workers=workers, threads=cfg.threads or None,
                       label=lambda j: f"checkpoint {j[2].label}", progress=progress,
                       desc=f"{EXPERIMENT} [{cfg.profile}]")
    import pandas as pd
    recs = [store.get(u) for u in all_units]
    return pd.DataFrame([{**r["unit"], **r["metrics"]} for r in recs if r is not None])


# --------------------------------------------------------------------------- analysis
def weight_stats(series, targets: str = "all"):
    """Per checkpoint: median / max over tensors of each tensor's std (what ``scale="empirical"``
    multiplies γ by; ``scale="init"`` uses a fixed s instead)."""
    import statistics
    import pandas as pd
    rows = []
    for ck in models.get_series(series):
        m = models.load_model(ck)
        stds = [float(p.detach().float().std()) for _, p in select_tensors(m, targets) if p.numel() > 1]
        rows.append({"checkpoint": ck.label, "tokens": float(ck.tokens),
                     "median_tensor_std": statistics.median(stds), "max_tensor_std": max(stds)})
        del m
    return pd.DataFrame(rows)


def summarize(df):
    """Per (source, γ, checkpoint): perturbed ppl mean/std over seeds, base ppl, Δppl mean/std,
    the half-widths of their 95 % CIs (``*_ci``), number of diverged seeds (left out of these
    descriptive means only; the verdicts see them). γ = 0 rows are the unperturbed base."""
    import numpy as np
    import pandas as pd
    df = df.copy()
    df["ppl"] = df["ppl"].astype(float)
    base = (df[df.gamma == 0.0].groupby(["source", "checkpoint"])["ppl"].first().rename("base_ppl"))
    d = df[df.gamma > 0.0].join(base, on=["source", "checkpoint"])
    d["delta"] = d["ppl"] - d["base_ppl"]
    fin = d.assign(ppl=d.ppl.where(np.isfinite(d.ppl)), delta=d.delta.where(np.isfinite(d.delta)))
    g = fin.groupby(["source", "gamma", "checkpoint", "tokens"], sort=False)
    out = pd.DataFrame({
        "base_ppl": g["base_ppl"].first(),
        "ppl_mean": g["ppl"].mean(), "ppl_std": g["ppl"].std(ddof=1).fillna(0.0),
        "delta_mean": g["delta"].mean(), "delta_std": g["delta"].std(ddof=1).fillna(0.0),
        "n_seeds": g["noise_seed"].count(),
        "n_diverged": d.groupby(["source", "gamma", "checkpoint", "tokens"], sort=False)["diverged"].sum()
                        .astype(int),
    }).reset_index()
    from scipy import stats
    n = out["n_seeds"].clip(lower=1)
    q = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)), 0.0)
    out["ppl_ci"] = q * out["ppl_std"] / np.sqrt(n)      # half-width of the 95 % CI of the mean
    out["delta_ci"] = q * out["delta_std"] / np.sqrt(n)
    return out.sort_values(["source", "gamma", "tokens"]).reset_index(drop=True)


def replicates(df, source: str, gamma: float):
    """(tokens, checkpoints, Δppl, perturbed ppl): the per-seed values of one (source, γ), each
    ``(noise seeds × checkpoints)`` in token order. A diverged seed stays in as inf/NaN."""
    d = df[(df.source == source)]
    base = d[d.gamma == 0.0].groupby("checkpoint")["ppl"].first()
    g = d[d.gamma == float(gamma)]
    ck = g.drop_duplicates("checkpoint").sort_values("tokens")
    piv = g.pivot_table(index="noise_seed", columns="checkpoint", values="ppl", aggfunc="first", dropna=False)
    piv = piv[ck.checkpoint.tolist()]
    P = piv.to_numpy(float)
    D = P - base[ck.checkpoint].to_numpy(float)[None, :]
    return ck.tokens.to_numpy(float), ck.checkpoint.tolist(), D, P


def verdict(df, source: str, alpha: float = verdicts.ALPHA) -> dict:
    """Per γ, from the per-seed records (not the means): does the damage (Δppl) rise with
    tokens, is the perturbed perplexity U-shaped? Each test at α / (number of γ)."""
    import numpy as np
    gammas = sorted(g for g in df[df.source == source].gamma.unique() if g > 0)
    a = verdicts.alpha_for(len(gammas), alpha)
    out = {}
    for g in gammas:
        tok, labels, D, P = replicates(df, source, g)
        bad = ~np.isfinite(P)
        note = (f"{int(bad.sum())} of {P.size} perturbed evaluations at γ={g:g} diverged (inf/NaN perplexity; "
                f"checkpoints {', '.join(l for l, b in zip(labels, bad.any(axis=0)) if b)})" if bad.any() else "")
        out[float(g)] = {"rises": verdicts.diverged(verdicts.rises(tok, D, alpha=a, unit="ppl per doubling of tokens"), note),
                         "u": verdicts.diverged(verdicts.u_shape(tok, P, alpha=a), note), "labels": labels,
                         "tokens": tok, "ppl": P, "n_diverged": int(bad.sum())}
    return out


def scale_verdicts(df, source: str, alpha: float = verdicts.ALPHA) -> dict:
    """One scale's claim rows: damage rises (over γ), U-shape (over γ), minimum earlier for larger γ."""
    v = verdict(df, source, alpha)
    rises = verdicts.combine({g: x["rises"] for g, x in v.items()}, over="γ")
    u = verdicts.combine({g: x["u"] for g, x in v.items()}, over="γ")
    curves = {g: x["ppl"] for g, x in v.items()}
    tok = next(iter(v.values()))["tokens"] if v else []
    earlier = verdicts.minimum_shift(tok, curves, direction="earlier", what="γ") if v else None
    return {"per_gamma": v, "rises": rises, "u": u, "earlier": earlier}


def verdict_table(df, sources: Iterable[str]):
    """One row per (source, γ): each test's label, statistic, CI and where the minimum is."""
    import pandas as pd
    rows = []
    for src in sources:
        for g, x in verdict(df, src).items():
            r, u = x["rises"], x["u"]
            k = u.detail.get("argmin")
            rows.append({"source": src, "gamma": g, "damage rises": r.label, "Δppl per doubling": r.statistic,
                         "CI": f"[{r.ci[0]:.3g}, {r.ci[1]:.3g}]", "U-shape": u.label,
                         "U statistic (%)": u.statistic, "U CI (%)": f"[{u.ci[0]:.3g}, {u.ci[1]:.3g}]",
                         "minimum at": x["labels"][k] if k is not None else "", "seeds": r.n_replicates,
                         "diverged": x["n_diverged"]})
    return pd.DataFrame(rows)


def _token_axis(ax, s):
    """Log token axis with one labelled tick per checkpoint (no crowded minor labels)."""
    ck = s.drop_duplicates("checkpoint").sort_values("tokens")
    plots.token_axis(ax, ck.tokens, ck.checkpoint)


def plot_delta(summary, source: str, ax=None, theirs: bool = False):
    """Δ perplexity (perturbed − base) against pre-training tokens, one line per γ, log axes."""
    import matplotlib.pyplot as plt
    import numpy as np
    if ax is None:
        _, ax = plt.subplots()
    s = summary[summary.source == source]
    positive = True
    for gamma, d in s.groupby("gamma"):
        d = d.sort_values("tokens")
        ax.errorbar(d.tokens, d.delta_mean, yerr=d.delta_ci, marker="o", ms=4, capsize=2,
                    label=f"γ = {gamma:g}")
        positive &= bool((d.delta_mean > 0).all())
    if theirs:
        th = THEIRS["pythia70m_report"]
        ax.plot([p["tokens"] for p in th["points"]], [p["delta_ppl"] for p in th["points"]], "k--x",
                label=f"theirs: Pythia-70M report, γ={th['gamma']} ({th['source']})")
    _token_axis(ax, s)
    if positive:
        plots.log_y(ax)
    else:
        ax.set_yscale("symlog", linthresh=max(1e-3, float(np.nanmin(np.abs(s.delta_mean[s.delta_mean != 0]))
                                                        if (s.delta_mean != 0).any() else 1.0)))
    ax.set_xlabel("pre-training tokens")
    ax.set_ylabel("Δ perplexity (perturbed − base)")
    ax.set_title(f"Sensitivity to Gaussian noise ({source})")
    ax.legend(fontsize=8)
    return ax


def plot_absolute(summary, source: str, ax=None):
    """Perturbed perplexity against tokens, with the unperturbed base and each γ's minimum."""
    import matplotlib.pyplot as plt
    import numpy as np
    if ax is None:
        _, ax = plt.subplots()
    s = summary[summary.source == source]
    base = s.drop_duplicates("checkpoint").sort_values("tokens")
    ax.plot(base.tokens, base.base_ppl, "k-o", ms=4, label="base (γ = 0)")
    for gamma, d in s.groupby("gamma"):
        d = d.sort_values("tokens")
        line = ax.errorbar(d.tokens, d.ppl_mean, yerr=d.ppl_ci, marker="o", ms=4, capsize=2,
                           label=f"γ = {gamma:g}")
        pm = d.ppl_mean.to_numpy(float)
        if np.isfinite(pm).any():
            k = int(np.nanargmin(np.where(np.isfinite(pm), pm, np.nan)))
            ax.plot([d.tokens.iloc[k]], [pm[k]], marker="*", ms=14, color=line[0].get_color(),
                    mec="k", ls="none")
    ax.plot([], [], "k*", ms=10, ls="none", label="minimum (inflection point)")
    _token_axis(ax, s)
    plots.log_y(ax)
    ax.set_xlabel("pre-training tokens")
    ax.set_ylabel("perplexity")
    ax.set_title(f"Perturbed perplexity ({source})")
    ax.legend(fontsize=8)
    return ax


# --------------------------------------------------------------------------- the chapter's verdict
SCALE_TEXT = {"init": "the initialization standard deviation (the paper's protocol)",
              "empirical": "each tensor's own empirical standard deviation (the Pythia-70M report's protocol)"}


def fmt_gammas(gs) -> str:
    return ", ".join(f"{g:g}" for g in gs) if gs else "none"


def describe(df, source: str, scale: str):
    """One paragraph on one noise scale at one source, from :func:`scale_verdicts`."""
    V = scale_verdicts(df, source)
    r, u, e = V["rises"], V["u"], V["earlier"]
    mins = "; ".join(f"γ={g:g}: {x['labels'][x['u'].detail['argmin']]}" if "argmin" in x["u"].detail
                     else f"γ={g:g}: —" for g, x in V["per_gamma"].items())
    div = sum(x["n_diverged"] for x in V["per_gamma"].values())
    text = (f"With noise scaled by {SCALE_TEXT[scale]}: the damage (Δ perplexity) rising with tokens is "
            f"**{r.label}** ({r.reason}; strongest: {r.stat_text()}); a U-shape of the perturbed perplexity is "
            f"**{u.label}** ({u.reason}; strongest: {u.stat_text()}). Minimum of the mean perturbed perplexity at: "
            f"{mins}." + (f" Minimum earlier for larger γ: **{e.label}** ({e.stat_text()})." if e is not None else "")
            + (f" {div} perturbed evaluations diverged (inf/NaN): those γ are inconclusive, not dropped." if div else ""))
    return text, V


def base_text(summary, source: str) -> str:
    """How the unperturbed perplexity moves over the series at one source."""
    import numpy as np
    b = summary[summary.source == source].drop_duplicates("checkpoint").sort_values("tokens")
    k = int(np.argmin(b.base_ppl.to_numpy()))
    mono = bool((np.diff(b.base_ppl.to_numpy()) <= 0).all())
    return (f"the unperturbed {source} perplexity goes from {b.base_ppl.iloc[0]:.2f} ({b.checkpoint.iloc[0]}) "
            f"to {b.base_ppl.iloc[-1]:.2f} ({b.checkpoint.iloc[-1]}), "
            + ("decreasing at every checkpoint" if mono else
               f"lowest at {b.checkpoint.iloc[k]} ({b.base_ppl.iloc[k]:.2f}): the base model itself is not "
               "monotone there, so a minimum of the perturbed perplexity on this source is not only the noise's doing"))


def weights_text(ws, init_s: float | None) -> str:
    """How the weights' scale grows over the series (from :func:`weight_stats`)."""
    m = ws.median_tensor_std
    return (f"the median over tensors of each tensor's standard deviation goes from {m.iloc[0]:.4f} "
            f"({ws.checkpoint.iloc[0]}) to {m.iloc[-1]:.4f} ({ws.checkpoint.iloc[-1]}), "
            f"{m.iloc[-1] / m.iloc[0]:.1f}x"
            + (f", while the initialization scale stays {init_s:g}" if init_s is not None else ""))


def chapter_verdict(df, summary, src_in: str, src_out: str, cfg, df2=None, cfg2=None) -> dict:
    """The chapter's verdict from its own records: per scale and source, the base models, and
    the claim rows (one pair per noise scale) for the claims page."""
    text_in, V_in = describe(df, src_in, cfg.scale)
    text_out = describe(df, src_out, cfg.scale)[0] if src_out != src_in else ""
    base = base_text(summary, src_in) + ("; " + base_text(summary, src_out) if src_out != src_in else "") + "."
    scales = {cfg.scale: (V_in, cfg)}
    text_cmp = ""
    if df2 is not None and cfg2 is not None:
        text_cmp, V2 = describe(df2, src_in, cfg2.scale)
        scales[cfg2.scale] = (V2, cfg2)
    rows = {}
    for sc, (V, c) in scales.items():
        where = f"{src_in}, {sc} scale, γ = {fmt_gammas(sorted(V['per_gamma']))}"
        rows[f"sensitivity_noise_{sc}"] = (V["rises"], f"{where}: Δ perplexity rising with tokens, {V['rises'].reason}")
        rows[f"ushape_noise_{sc}"] = (V["u"], f"{where}: interior minimum of the perturbed perplexity, {V['u'].reason}"
                                      + (f"; minimum earlier for larger γ: {V['earlier'].label}" if V["earlier"] else ""))
    main = V_in
    headline = (f"Noise scaled by {SCALE_TEXT[cfg.scale]}: damage rising with tokens is {main['rises'].label}, "
                f"a U-shape is {main['u'].label}.")
    return {"in": text_in, "out": text_out, "cmp": text_cmp, "base": base, "claims": rows, "headline": headline,
            "label": main["u"].label, "V": V_in, "numbers": {
                sc: {str(g): {"rises": x["rises"].to_dict(), "u": x["u"].to_dict()} for g, x in V["per_gamma"].items()}
                for sc, (V, _) in scales.items()}}
