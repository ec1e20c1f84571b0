"""Gaussian parameter perturbation with exact restore, and the sensitivity sweep of chapter 02.

The perturbation is ``θ' = θ + γ·s·ε`` with ``ε ~ N(0, I)`` drawn per tensor, where the scale
``s`` is either the parameter's initialization standard deviation (``scale="init"``: the paper
scales the noise by the initialization covariance) or the tensor's own empirical standard
deviation (``scale="empirical"``: the protocol of the Pythia-70M reproduction report)::

    from coft_utils import perturb, models, evaluate
    model = models.load_model(ckpt)
    p = perturb.Perturber(model, scale="init", targets="all")     # one backup of the weights
    with p.perturbed(gamma=0.04, key=(ckpt.label, 0.04, 0)):      # noise from (label, γ, seed)
        r = evaluate.perplexity(model, blocks)                     # perturbed model
    # here the weights are bit-for-bit the original again (restored with copy_)

    cfg = profiles.resolve("02_gaussian_sensitivity", "cpu")
    df = perturb.sweep(perturb.load_series(cfg), cfg)              # records in results.Store; resumes
    s = perturb.summarize(df)                                      # mean/std over noise seeds, Δppl
    perturb.verdict(s, "gutenberg")                                # monotone? U-shape? per γ

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

from . import evaluate, models, profiles, results
from .profiles import param

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
    n_blocks: int = param(64, "held-out blocks per source", min=1)
    seq_len: int = param(128, "tokens per held-out block", min=2)
    batch_size: int = param(16, "evaluation batch size", min=1)
    dtype: str = param("float32", "model dtype", choices=("float32", "bfloat16"))
    threads: int = param(0, "torch CPU threads (0: leave as is)", min=0)

    def check(self):
        if "c4" in self.sources and profiles.get_profile(self.profile).offline:
            raise profiles.ProfileError(
                f"source 'c4' needs the hub (profile 'paper'); profile {self.profile!r} is offline; "
                "allowed here: gutenberg, wikitext")
        if len(set(self.gammas)) != len(self.gammas):
            raise profiles.ProfileError(f"parameter 'gammas' has duplicates: {self.gammas}")
        if not self.gammas:
            raise profiles.ProfileError("parameter 'gammas' must list at least one γ")
        if len(set(self.compare_gammas)) != len(self.compare_gammas):
            raise profiles.ProfileError(f"parameter 'compare_gammas' has duplicates: {self.compare_gammas}")

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
                  compare_gammas=(0.8, 1.6, 3.2, 6.4), n_seeds=3, n_blocks=128, seq_len=128,
                  batch_size=16, threads=1),
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
    from . import pretrain  # the project's pre-training suite (cached; trained once)
    return pretrain.chapter_series(cfg, progress=True)


def _c4_ids(tokenizer, n_tokens: int):
    """C4 validation (``allenai/c4``, en) from the hub: the first documents, cached per tokenizer."""
    import numpy as np
    from . import data
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
    base = {"series": series.name, "checkpoint": ckpt.label, "tokens": float(ckpt.tokens),
            "scale": cfg.scale, "targets": cfg.targets, "init_std": cfg.init_std,
            "n_blocks": cfg.n_blocks, "seq_len": cfg.seq_len, "dtype": cfg.dtype}
    out = []
    for src in cfg.sources:
        out.append({**base, "gamma": 0.0, "noise_seed": 0, "source": src})
        for g in cfg.gammas:
            if g == 0.0:
                continue
            for i in range(cfg.n_seeds):
                out.append({**base, "gamma": float(g), "noise_seed": cfg.seed + i, "source": src})
    return out


def sweep(series, cfg: Config, store: results.Store | None = None, progress: bool = True,
          device: str | None = None):
    """Perturb + evaluate every (checkpoint, γ, noise seed) on every source; one record per
    (checkpoint, γ, seed, source) in ``store`` (default ``results.Store(EXPERIMENT, profile)``).

    Finished units are skipped (a killed sweep resumes). A diverged point (inf/NaN loss) is
    recorded with ``diverged=True`` and the sweep goes on. Returns ``store.frame()`` restricted
    to this config's units.
    """
    import torch
    series = models.get_series(series)
    store = store or results.Store(EXPERIMENT, cfg.profile)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device is None:
        dev = profiles.get_profile(cfg.profile).device
        device = "cuda" if dev == "auto" and torch.cuda.is_available() else "cpu"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    data_names = [_DATA_NAMES[s] for s in cfg.sources if s in _DATA_NAMES]
    all_units, blocks_cache = [], {}
    todo_ck = [(c, _units(series, cfg, c)) for c in series]
    n_total = sum(len(u) for _, u in todo_ck)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_total, desc=f"{EXPERIMENT} [{cfg.profile}]", leave=False)
    for ckpt, units in todo_ck:
        all_units += units
        todo = [u for u in units if not store.done(u)]
        if bar is not None:
            bar.update(len(units) - len(todo))
        if not todo:
            continue
        model = models.load_model(ckpt, device=device, dtype=dtype)
        tok = models.load_tokenizer(ckpt, series)
        fp = evaluate.tokenizer_fingerprint(tok)
        for src in cfg.sources:
            if (fp, src) not in blocks_cache:
                blocks_cache[(fp, src)] = heldout(tok, src, cfg.n_blocks, cfg.seq_len)
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
                    r = evaluate.perplexity(model, blocks_cache[(fp, u["source"])].to(device),
                                            cfg.batch_size)
                    r["diverged"] = bool(r["diverged"] or not math.isfinite(r["ppl"]))
                    r["eval_s"] = round(time.perf_counter() - t1, 4)
                    r["init_std_used"] = init_std
                    store.write(u, r, config=cfg, data_names=data_names)
                    if bar is not None:
                        bar.update(1)
        del pert, model
    if bar is not None:
        bar.close()
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
    number of diverged seeds. γ = 0 rows are the unperturbed base."""
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
    return out.sort_values(["source", "gamma", "tokens"]).reset_index(drop=True)


def verdict(summary, source: str) -> dict:
    """Per γ from our own numbers: is Δppl monotone in tokens? is perturbed ppl U-shaped?

    *monotone*: the mean Δppl never decreases from one checkpoint to the next; a drop smaller than
    the seed spread (sum of the two std's) counts as *monotone within noise*.
    *U-shape*: the minimum of the mean perturbed ppl is at an interior checkpoint (not the first,
    not the last) and a later checkpoint is higher by more than the seed spread (sum of the std's).
    """
    import numpy as np
    out = {}
    s = summary[summary.source == source]
    for gamma, d in s.groupby("gamma"):
        d = d.sort_values("tokens")
        dm, ds = d.delta_mean.to_numpy(float), d.delta_std.to_numpy(float)
        pm, ps = d.ppl_mean.to_numpy(float), d.ppl_std.to_numpy(float)
        tok = d.tokens.to_numpy(float)
        steps = np.diff(dm)
        drops = [(i, -st) for i, st in enumerate(steps) if not st >= 0]  # NaN counts as a drop
        monotone = len(drops) == 0
        within = all(np.isfinite(dr) and dr <= ds[i] + ds[i + 1] for i, dr in drops)
        finite = np.isfinite(pm)
        k = int(np.nanargmin(np.where(finite, pm, np.nan))) if finite.any() else -1
        rise, u = 0.0, False
        if 0 < k < len(pm) - 1:
            later = pm[k + 1:]
            later_std = ps[k + 1:]
            j = int(np.argmax(np.where(np.isfinite(later), later, np.inf)))
            rise = float(later[j] - pm[k])
            u = bool(rise > ps[k] + later_std[j] or not np.isfinite(later[j]))
        out[float(gamma)] = {
            "monotone": bool(monotone), "monotone_within_noise": bool(monotone or within),
            "n_drops": len(drops), "u_shape": u, "argmin_tokens": float(tok[k]) if k >= 0 else float("nan"),
            "argmin_label": str(d.checkpoint.iloc[k]) if k >= 0 else "", "argmin_interior": 0 < k < len(pm) - 1,
            "rise_after_min": rise, "delta_first": float(dm[0]), "delta_last": float(dm[-1]),
            "n_diverged": int(d.n_diverged.sum()),
        }
    return out


def verdict_table(summary, sources: Iterable[str]):
    import pandas as pd
    rows = []
    for src in sources:
        for g, v in verdict(summary, src).items():
            rows.append({"source": src, "gamma": g, **v})
    return pd.DataFrame(rows)


def _token_axis(ax, s):
    """Log token axis with one labelled tick per checkpoint (no crowded minor labels)."""
    import matplotlib.ticker as mt
    ax.set_xscale("log")
    ck = s.drop_duplicates("checkpoint").sort_values("tokens")
    ax.xaxis.set_major_locator(mt.FixedLocator(ck.tokens.to_list()))
    ax.xaxis.set_major_formatter(mt.FixedFormatter([str(c) for c in ck.checkpoint]))
    ax.xaxis.set_minor_locator(mt.NullLocator())


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
        ax.errorbar(d.tokens, d.delta_mean, yerr=d.delta_std, marker="o", ms=4, capsize=2,
                    label=f"γ = {gamma:g}")
        positive &= bool((d.delta_mean > 0).all())
    if theirs:
        th = THEIRS["pythia70m_report"]
        ax.plot([p["tokens"] for p in th["points"]], [p["delta_ppl"] for p in th["points"]], "k--x",
                label=f"theirs: Pythia-70M report, γ={th['gamma']} ({th['source']})")
    _token_axis(ax, s)
    if positive:
        ax.set_yscale("log")
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
    v = verdict(summary, source)
    for gamma, d in s.groupby("gamma"):
        d = d.sort_values("tokens")
        line = ax.errorbar(d.tokens, d.ppl_mean, yerr=d.ppl_std, marker="o", ms=4, capsize=2,
                           label=f"γ = {gamma:g}")
        vv = v[float(gamma)]
        if np.isfinite(vv["argmin_tokens"]):
            y = float(d.loc[d.tokens == vv["argmin_tokens"], "ppl_mean"].iloc[0])
            ax.plot([vv["argmin_tokens"]], [y], marker="*", ms=14, color=line[0].get_color(),
                    mec="k", ls="none")
    ax.plot([], [], "k*", ms=10, ls="none", label="minimum (inflection point)")
    _token_axis(ax, s)
    ax.set_yscale("log")
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


def describe(summary, source: str):
    """One sentence on monotonicity and U-shapes per γ at one held-out source, and the lists."""
    v = verdict(summary, source)
    mono = [g for g, x in v.items() if x["monotone"]]
    mono_n = [g for g, x in v.items() if x["monotone_within_noise"] and not x["monotone"]]
    u = [g for g, x in v.items() if x["u_shape"]]
    mins = "; ".join(f"γ={g:g}: {x['argmin_label']}" for g, x in v.items())
    div = sum(x["n_diverged"] for x in v.values())
    text = (f"Δ perplexity is monotone in tokens for {len(mono)} of {len(v)} γ ({fmt_gammas(mono)})"
            + (f", monotone within the seed spread for {fmt_gammas(mono_n)}" if mono_n else "")
            + ("; an interior minimum of the perturbed perplexity (U-shape) appears for "
               + (f"γ = {fmt_gammas(u)}. " if u else "no γ. "))
            + f"Minimum of the perturbed perplexity at: {mins}."
            + (f" {div} perturbed evaluations diverged." if div else ""))
    return text, v, mono, u


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


def overall_verdict(summary, src_in: str, src_out: str) -> dict:
    """The chapter's verdict from its own numbers: per source, base models, and overall."""
    verdict_in, v_in, mono_in, u_in = describe(summary, src_in)
    verdict_out, _, _, _ = describe(summary, src_out)
    base = base_text(summary, src_in) + ("; " + base_text(summary, src_out) if src_out != src_in else "") + "."
    n_g = len(v_in)
    u_tokens = [v_in[g]["argmin_tokens"] for g in sorted(u_in)]
    earlier = len(u_tokens) >= 2 and all(b <= a for a, b in zip(u_tokens, u_tokens[1:]))
    if u_in and len(mono_in) == n_g:
        overall = ("both parts of the claim hold here: progressive sensitivity for every γ and a U-shape "
                   f"for γ = {fmt_gammas(u_in)}" + (", with the minimum no later for larger γ." if earlier else "."))
    elif u_in:
        overall = (f"a U-shape appears for γ = {fmt_gammas(u_in)}, but Δ perplexity is not monotone for every γ "
                   f"(monotone for {len(mono_in)} of {n_g}).")
    elif len(mono_in) == n_g:
        overall = ("progressive sensitivity holds for every γ, but no U-shape appears in this token range: "
                   "the base model still improves faster than its sensitivity to noise grows.")
    else:
        overall = (f"neither part holds cleanly here: Δ perplexity is monotone for {len(mono_in)} of {n_g} γ "
                   "and no γ shows an interior minimum.")
    return {"in": verdict_in, "out": verdict_out, "base": base, "overall": overall, "v": v_in,
            "mono": mono_in, "u": u_in, "n_g": n_g, "earlier": earlier, "src_in": src_in}


def claim_verdicts(V: dict, cfg) -> dict:
    """Verdicts for the claims page: {claim id: (verdict, what was measured)}."""
    n_g, mono, u = V["n_g"], V["mono"], V["u"]
    where = f"{V['src_in']}, {cfg.scale} scale"
    return {
        "sensitivity_noise": ("observed" if len(mono) == n_g else "partly observed" if mono else "not observed",
                              f"{where}: Δ perplexity monotone in tokens for {len(mono)} of {n_g} γ"),
        "ushape_noise": ("observed" if u else "not observed",
                         f"{where}: interior minimum of perturbed perplexity for γ = {fmt_gammas(u)} of {n_g}"
                         + (" (no later for larger γ)" if V["earlier"] else "")),
    }
