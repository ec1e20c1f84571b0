"""Chapter 02, the experiment: Gaussian parameter perturbation with exact restore, and the sweep.

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
    ws = perturb.weight_stats(cfg.series)                          # per-checkpoint tensor std

The summaries, verdicts, tables, figures and texts of the chapter are in
:mod:`coft_utils.chapters.perturb_report`; this module holds no analysis.

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

from ..foundation import evaluate, models, profiles, results, weights
from ..foundation.profiles import param

__all__ = ["Config", "PRESETS", "Perturber", "perturb_", "noise_seed", "select_tensors", "sweep_runs",
           "load_series", "heldout", "data_origin", "sweep", "weight_stats", "EXPERIMENT"]

EXPERIMENT = "02_gaussian_sensitivity"
SCALES = ("init", "empirical")
TARGETS = ("all", "no_embed_norm")
SOURCES = ("gutenberg", "wikitext", "c4")


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Config(profiles.SeriesConfig):
    gammas: tuple[float, ...] = param((0.01, 0.02, 0.04), "perturbation sizes γ (> 0: the unperturbed model is "
                                      "always measured)", min=0.0, min_exclusive=True)
    n_seeds: int = param(3, "noise seeds per (checkpoint, γ)", min=1, max=100)
    scale: str = param("init", "noise scale s: init std or the tensor's empirical std", choices=SCALES)
    targets: str = param("all", "perturbed tensors", choices=TARGETS)
    compare_gammas: tuple[float, ...] = param((), "γ of a second sweep with the other scale "
                                              "(empty: none)", min=0.0, min_exclusive=True)
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
        if "gutenberg" in self.sources and data_origin(self.profile) == "hub":
            raise profiles.ProfileError(
                f"parameter 'sources' contains 'gutenberg', which has no hub copy, and profile {self.profile!r} "
                "reads its data from the hub; allowed here: c4, wikitext")
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


# cpu: the wsd suite from 0.5M to 32M tokens (7 checkpoints, the ones chapters 03-04 fine-tune)
_CPU_CKPTS = ("0.5M", "1M", "2M", "4M", "8M", "16M", "32M")

PRESETS: dict[str, Config] = {
    # tests / CI: a few tiny evaluations
    "smoke": Config(profile="smoke", scale="empirical", gammas=(0.2, 0.8), compare_gammas=(3.2,),
                    n_seeds=2, n_blocks=8, seq_len=64, batch_size=8, threads=1),
    # γ grids from a search on the cpu suite (cosine, 0.25M..8M tokens; see the chapter): with the
    # empirical scale Δppl is monotone for every γ and the U-shape appears from γ ≈ 0.4; with the
    # init scale (0.02) the damage saturates and a U needs γ ≈ 3, with a large seed spread.
    # One torch thread: on 2 shared cores a 2-thread evaluation of this tiny model is 3-8x slower.
    "cpu": Config(profile="cpu", schedule="wsd", checkpoints=_CPU_CKPTS, scale="empirical", gammas=(0.05, 0.1, 0.2, 0.4, 0.8),
                  compare_gammas=(0.8, 1.6, 3.2, 6.4), n_seeds=5, n_blocks=128, seq_len=128,
                  batch_size=16, threads=1, workers=2),
    "gpu": Config(profile="gpu", scale="empirical", gammas=(0.025, 0.05, 0.1, 0.2, 0.4, 0.8),
                  compare_gammas=(0.4, 0.8, 1.6, 3.2, 6.4), n_seeds=5, n_blocks=512, seq_len=256,
                  batch_size=32),
    # the paper's Section 3 design: chapter 00's controlled suite (series="suite": OLMo-30M on C4,
    # 4B..128B tokens, cosine to zero; suite_model="olmo-15m" / "olmo-90m" for the other two sizes;
    # the first author's summary: "we train our own 30M parameter models and test how Gaussian noise
    # affects model parameters at different pre-training stages"), noise scaled by the init std,
    # C4 validation in domain, WikiText-2 out of domain, both read from the hub (hubdata); the γ
    # grid is ours. The comparison sweep uses the Pythia-70M report's per-tensor empirical scale.
    # The OLMo-1B hub series is a separate, labelled option: -y '{series: olmo-1b}' (batch_size 8
    # of 1024 tokens fits one 80 GB GPU in float32; bfloat16 halves it).
    # Evaluation batch: 32 x 1024 tokens of a 30M model (~50k vocabulary: logits ~6.6 GB in fp32).
    "paper": Config(profile="paper", series="suite", scale="init", gammas=(0.5, 1.0, 2.0, 4.0),
                    compare_gammas=(0.01, 0.02, 0.04), n_seeds=3, sources=("c4", "wikitext"),
                    n_blocks=256, seq_len=1024, batch_size=32),
}
# cpu-deep (the reference run): the cpu design on the wsd series to 64M tokens, over chapter 00's
# 3 pre-training runs (3 noise seeds each)
PRESETS["cpu-deep"] = dataclasses.replace(PRESETS["cpu"], profile="cpu-deep", pretrain_runs=3, n_seeds=3,
                                          checkpoints=())


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


def data_origin(profile: str) -> str:
    """Where the held-out sources are read at ``profile``: 'hub' at paper (``hubdata.source_for``), else 'local'."""
    try:
        from ..foundation import hubdata
    except ImportError:  # no hub data module: every source is local (c4 is streamed regardless)
        return "local"
    return hubdata.source_for(profile)


def heldout(tokenizer, source: str, n_blocks: int, seq_len: int, origin: str = "local"):
    """Fixed held-out blocks ``[n_blocks, seq_len]`` (the same for every checkpoint of a series);
    ``origin``: 'local' (``../shared/data``) or 'hub' (:mod:`coft_utils.foundation.hubdata`)."""
    if source not in SOURCES:
        raise ValueError(f"unknown held-out source {source!r}; allowed: {', '.join(SOURCES)}")
    # c4 (hub, streamed): blocks evenly spaced over 4x the tokens needed, whole documents
    return evaluate.heldout_blocks(tokenizer, source, n_blocks, seq_len, origin=origin,
                                   **({"oversample": 4} if source == "c4" else {}))


# --------------------------------------------------------------------------- the sweep
def _units(series, cfg: Config, ckpt, run: int = 0) -> list[dict]:
    """One checkpoint's units; pre-training run ``run`` (of ``cfg.pretrain_runs``) has its own block
    of noise seeds (run 0 of a one-run config: ``seed * n_seeds + i``, as before runs existed)."""
    first = (cfg.seed * cfg.pretrain_runs + run) * cfg.n_seeds
    base = {"series": series.name, "checkpoint": ckpt.label, "weights": models.identity(ckpt),
            **weights.tokenizer_key(series), "tokens": float(ckpt.tokens),
            "scale": cfg.scale, "targets": cfg.targets, "init_std": cfg.init_std,
            "n_blocks": cfg.n_blocks, "seq_len": cfg.seq_len, "dtype": cfg.dtype}
    out = []
    for src in cfg.sources:
        out.append({**base, "gamma": 0.0, "noise_seed": 0, "source": src})
        for g in cfg.gammas:
            if g == 0.0:
                continue
            for i in range(cfg.n_seeds):
                out.append({**base, "gamma": float(g), "noise_seed": first + i, "source": src})
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
    origin = data_origin(cfg.profile)
    blocks = {src: heldout(tok, src, cfg.n_blocks, cfg.seq_len, origin) for src in cfg.sources}
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
          device: str | None = None, run: int = 0):
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
    data_names = evaluate.data_names(cfg.sources, data_origin(cfg.profile))
    all_units, jobs = [], []
    for ckpt in series:
        units = _units(series, cfg, ckpt, run)
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
    return pd.DataFrame([{**r["unit"], **r["metrics"], "record_id": results.unit_id(r["unit"])}
                         for r in recs if r is not None])


def sweep_runs(runs, cfg: Config, progress: bool = True):
    """:func:`sweep` of every pre-training run (``series.runs_for_config(cfg)``), one frame (its
    ``series`` column names the run)."""
    import pandas as pd
    return pd.concat([sweep(s, cfg, progress=progress, run=r) for r, s in enumerate(runs)], ignore_index=True)


# --------------------------------------------------------------------------- the weights
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
