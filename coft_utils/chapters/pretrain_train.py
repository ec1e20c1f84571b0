"""The training loop of the pre-training suite: one job, resumable, and the worker that runs it.

A job (:class:`coft_utils.chapters.pretrain_plan.Job`) is one contiguous training segment: steps
``[start, end)`` from scratch or from a parent state (a wsd branch point). :func:`train_job`
runs it with AdamW, a ``LambdaLR`` of :func:`~coft_utils.chapters.pretrain_plan.lr_multiplier`,
gradient clipping and the seeded :class:`BlockStream` (the batch of global step ``k`` is a pure
function of (seed, k)), through ``accelerate`` (one process, or DDP under ``torchrun`` /
``accelerate launch``). Each run saves its full state (weights, optimizer, scheduler, step = data
position, RNG, elapsed time) atomically every ``save_every`` steps; a killed run restarts from it
and ends bit-identical to an uninterrupted one. State files are read with ``torch.load(weights_only=True)`` only.
:class:`Unit` / :func:`run_unit` are what a worker process of
:func:`coft_utils.chapters.pretrain.train_suites` gets and runs::

    from coft_utils.chapters import pretrain, pretrain_plan, pretrain_train
    cfg = pretrain.resolve("smoke")
    acc = pretrain_train._accelerator(cfg)
    stream = pretrain_train.BlockStream(blocks, cfg.batch_size, cfg.seed)
    job = pretrain_plan.plan(cfg)[0]
    info = pretrain_train.train_job(cfg, job, run_dir, stream, tokenizer, acc, progress=False)
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..foundation import models, parallel, profiles, results
from .pretrain_data import _tokens_needed, _val_blocks, get_tokenizer, token_blocks
from .pretrain_plan import lr_multiplier

if TYPE_CHECKING:
    from .pretrain import Config
    from .pretrain_plan import Job

__all__ = ["BlockStream", "train_job", "Unit", "run_unit", "accumulation"]


class BlockStream:
    """Batch of global step ``k`` = rows ``k*B .. (k+1)*B`` of the epoch-wise shuffled blocks."""

    def __init__(self, blocks: np.ndarray, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise profiles.ProfileError(f"parameter 'batch_size' = {batch_size} must be divisible by "
                                        f"the number of processes ({world})")
        self.blocks, self.B, self.seed, self.rank, self.world = blocks, batch_size, seed, rank, world
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.blocks))}
        return self._perms[epoch]

    def batch(self, step: int):
        import torch
        n, per = len(self.blocks), self.B // self.world
        idx = np.arange(step * self.B + self.rank * per, step * self.B + (self.rank + 1) * per)
        ep = idx // n
        if ep[0] == ep[-1]:
            rows = self._perm(int(ep[0]))[idx % n]
        else:  # the batch straddles two epochs
            rows = np.asarray([self._perm(int(e))[i % n] for e, i in zip(ep, idx)])
        return torch.from_numpy(self.blocks[rows].astype(np.int64))


# --------------------------------------------------------------------------- training
def _rng_state():
    """All RNG states as tensors and plain python values only, so ``torch.load(weights_only=True)``
    reads them back without any allow-list (no numpy objects in the pickle)."""
    import torch
    kind, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": [int(version), [int(v) for v in internal], gauss_next],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(st):
    import torch
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    if isinstance(n, dict):
        n = (n["kind"], np.asarray(n["key"].numpy(), dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(n)  # (a legacy state holds numpy's own tuple)
    version, internal, gauss_next = st["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if st.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _legacy_state_globals() -> list:
    """The only non-torch types a state file written before the safe format holds (numpy's RNG key,
    a uint32 array): numpy array reconstruction, under both module spellings (numpy 1.x and 2.x)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    rec = multiarray._reconstruct
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), rec, (rec, "numpy.core.multiarray._reconstruct"),
            (rec, "numpy._core.multiarray._reconstruct")]


def _load_state(path: Path) -> dict:
    """Read a state file with ``torch.load(weights_only=True)``: never unpickles arbitrary objects
    (a crafted file in a shared runs folder must not run code). A legacy file (numpy RNG state inside)
    is read with a narrow allow-list of numpy array types; anything else is refused."""
    import pickle
    import torch
    try:
        with torch.serialization.safe_globals(_legacy_state_globals()):
            st = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = [l.strip() for l in str(e).splitlines() if "nsupported" in l or "but got" in l] or ["unreadable"]
        raise RuntimeError(f"refusing to load pre-training state {path}: it cannot be read safely "
                           f"(weights_only=True) and is not a state file this package wrote; delete it to "
                           f"restart that job from scratch ({why[0]})") from None
    if not (isinstance(st, dict) and {"model", "optimizer", "step", "rng"} <= st.keys()):
        raise RuntimeError(f"refusing to load pre-training state {path}: not a state file this package wrote; "
                           f"delete it to restart that job from scratch")
    return st


def _save_state(path: Path, state: dict) -> None:
    import torch
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _latest_lineage_state(state_dir: Path, job: Job, after: int) -> Path | None:
    """The kept state of ``job``'s lineage with the most steps in ``(after, job.end]``, if any."""
    if job.lineage is None or job.parent is not None:
        return None
    best, best_step = None, after
    for p in state_dir.glob(f"{job.lineage}@*.pt"):
        try:
            k = int(p.stem.rsplit("@", 1)[1])
        except ValueError:
            continue
        if best_step < k <= job.end:
            best, best_step = p, k
    return best


def _model_config(cfg: Config, tokenizer):
    # muP scales the output layer apart from the input embedding: untied (models.mup_init)
    return models.olmo_config(cfg.model, vocab_size=len(tokenizer), max_len=cfg.seq_len,
                              tie=not cfg.mup_base_width,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id,
                              eos_token_id=tokenizer.eos_token_id)


def accumulation(cfg: Config, world: int) -> tuple[int, int, int]:
    """(rows per process per step, rows per forward/backward, micro-batches per step).

    The global batch ``cfg.batch_size`` is the same for any launch: each of ``world`` processes
    takes ``batch_size / world`` rows of a step's batch and reaches them in micro-batches of
    ``cfg.micro_batch_size`` (0: all at once), accumulating gradients. A split that does not
    divide is an error before any work."""
    if world < 1 or cfg.batch_size % world:
        raise profiles.ProfileError(f"parameter 'batch_size' = {cfg.batch_size} must be divisible by "
                                    f"the number of processes ({world})")
    share = cfg.batch_size // world
    micro = cfg.micro_batch_size or share
    if share % micro:
        raise profiles.ProfileError(
            f"parameter 'batch_size' = {cfg.batch_size} is not divisible by processes x micro_batch_size = "
            f"{world} x {micro}; allowed: micro_batch_size dividing {share} (batch_size / processes), or 0")
    return share, micro, share // micro


def _make_optimizer(model, cfg: Config):
    import torch
    if cfg.mup_base_width:  # muP (models.mup_param_groups): per-group LR and weight decay
        return torch.optim.AdamW(models.mup_param_groups(model, cfg.mup_base_width, cfg.peak_lr(), cfg.weight_decay),
                                 lr=cfg.peak_lr(), betas=(0.9, cfg.beta2), eps=1e-8, fused=False, foreach=True)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.peak_lr(), betas=(0.9, cfg.beta2), eps=1e-8,
                             fused=False, foreach=True)


def _accelerator(cfg: Config):
    from accelerate import Accelerator
    import torch
    # no GPU (e.g. the paper path tested on CPU): the CPU backend, so that a torchrun / accelerate
    # launch still forms one process group (gloo) instead of N independent world-size-1 runs
    cpu = profiles.get_profile(cfg.profile).device == "cpu" or not torch.cuda.is_available()
    mp = cfg.mixed_precision if not cpu else "no"
    return Accelerator(cpu=cpu, mixed_precision=mp)


def train_job(cfg: Config, job: Job, run_dir: Path, stream: BlockStream, tokenizer, accelerator,
              on_export: Callable | None = None, progress: bool = True, stop_after: int | None = None) -> dict:
    """Run (or resume) one job; export its checkpoints; return {"wall_s": elapsed, "steps": n}.

    The full state is saved atomically to ``run_dir/state/<job>.pt`` every ``cfg.save_every``
    steps; a restart resumes from it. ``stop_after`` (tests) stops after that many new steps.
    """
    import torch
    state_dir = run_dir / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    done_file = state_dir / f"{job.name}.done.json"
    if done_file.is_file():
        return json.loads(done_file.read_text())
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _, micro, n_micro = accumulation(cfg, accelerator.num_processes)
    model = models.build_model(_model_config(cfg, tokenizer), seed=cfg.seed, mup_base_width=cfg.mup_base_width)
    optimizer = _make_optimizer(model, cfg)
    fn = lambda i: lr_multiplier(job.start + i, cfg, job.kind, job.total, job.decay_start)
    resume = state_dir / f"{job.name}.pt"
    step, elapsed, own = job.start, 0.0, 0.0
    src = resume if resume.is_file() else (state_dir / f"{job.parent}.pt" if job.parent else None)
    st, div0 = None, None
    if src is not None:
        st = _load_state(src)
    lin = _latest_lineage_state(state_dir, job, st["step"] if (st is not None and src == resume) else job.start)
    if lin is not None:  # the same run went further before (e.g. the LR scan's shorter trunk)
        src, st = resume, _load_state(lin)
    if st is not None:
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    if st is not None:
        if src == resume:
            scheduler.load_state_dict(st["scheduler"])
            step, elapsed, own = st["step"], st["elapsed"], st["own"]
        else:  # a wsd branch: continue from the trunk's state (its time counts), own schedule
            elapsed = st["elapsed"]
        for g in optimizer.param_groups:  # the lr of the next update, whatever the saved one was
            g["lr"] = g["initial_lr"] * fn(step - job.start)
        _set_rng_state(st["rng"])
        div0 = st.get("diverged_step")  # a wsd branch inherits its trunk's divergence
        del st
    else:
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    saves = dict(job.saves)
    keep = set(job.keep)
    bar = None
    if progress and accelerator.is_main_process:
        from tqdm.auto import tqdm
        bar = tqdm(total=job.end - job.start, initial=step - job.start, desc=f"{cfg.schedule} [{cfg.profile}] {job.name}",
                   leave=False, mininterval=2.0)

    def state():
        return {"model": accelerator.unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "elapsed": elapsed, "own": own,
                "rng": _rng_state(), "diverged_step": diverged_step()}

    def diverged_step():  # read at save points only: no device sync per step
        b = int(first_bad)
        return b if b >= 0 else None

    new, first = 0, step
    # the first step whose training loss was not finite (-1: none), carried over from the state
    first_bad = torch.tensor(int(div0) if div0 is not None else -1, device=accelerator.device)
    t0 = time.perf_counter()
    while step < job.end:
        x = stream.batch(step).to(accelerator.device)
        if n_micro == 1:
            out = model(input_ids=x, labels=x)
            loss = out.loss.detach()
            accelerator.backward(out.loss)
        else:  # gradient accumulation: the mean over the micro-batches = the mean over the step's rows
            loss = torch.zeros((), device=accelerator.device)
            for j in range(n_micro):
                xj = x[j * micro:(j + 1) * micro]
                with accelerator.no_sync(model) if j < n_micro - 1 else contextlib.nullcontext():
                    out = model(input_ids=xj, labels=xj)
                    accelerator.backward(out.loss / n_micro)
                loss = loss + out.loss.detach() / n_micro
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss),
                                torch.full_like(first_bad, step + 1), first_bad)
        if cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        new += 1
        if bar is not None:
            bar.update(1)
        if step in saves or step in keep or step % cfg.save_every == 0 or step == job.end:
            now = time.perf_counter()
            elapsed += now - t0
            own += now - t0
            t0 = now
            if accelerator.is_main_process:
                st = state()
                if step in keep:
                    _save_state(state_dir / f"{job.lineage or job.name}@{step}.pt", st)
                if step in saves and on_export is not None:
                    on_export(accelerator.unwrap_model(model), job.series, saves[step], step, elapsed,
                              diverged_step=st["diverged_step"])
                _save_state(resume, st)
            accelerator.wait_for_everyone()
            t0 = time.perf_counter()
        if stop_after is not None and new >= stop_after and step < job.end:
            if bar is not None:
                bar.close()
            return {"wall_s": elapsed, "own_wall_s": own, "steps": step, "stopped": True}
    if bar is not None:
        bar.close()
    info = {"wall_s": elapsed, "own_wall_s": own, "steps": step, "resumed_at": first,
            "diverged_step": diverged_step()}
    if accelerator.is_main_process:
        results.atomic_write_json(done_file, info)
        resume.unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    return info


# --------------------------------------------------------------------------- one unit of work
@dataclass(frozen=True)
class Unit:
    """One job of one suite folder: what a worker process needs to train it (picklable)."""

    cfg: Config  # _train_cfg of a config whose plan holds ``job``
    root: str
    job: Job
    progress: bool = False
    after: str | None = None  # the job (of this round, on another worker) that makes this job's parent state

    def steps_left(self) -> int:
        return self.job.end - self.job.start

    def label(self) -> str:
        return f"{self.job.name} (lr {self.cfg.lr:g}, {Path(self.root).name})"


def _context_key(cfg: Config) -> tuple:
    from ..foundation import data
    return (cfg.corpus, cfg.vocab_size, cfg.tokenizer_chars, cfg.seq_len, cfg.batch_size, _tokens_needed(cfg),
            cfg.seed, cfg.val_blocks, cfg.profile, cfg.mixed_precision, cfg.c4_train_files, str(data.cache_dir()))


_CONTEXT: dict = {}


def _context(cfg: Config, accelerator=None):
    """(tokenizer, block stream, validation blocks, accelerator) of ``cfg``, cached per process."""
    key = _context_key(cfg) + (id(accelerator),)
    if key not in _CONTEXT:
        if parallel.in_worker():  # no progress bars / chatty loggers from the worker processes
            parallel.quiet()
        acc = accelerator or _accelerator(cfg)
        accumulation(cfg, acc.num_processes)  # a batch that does not split: an error before any work
        tok = get_tokenizer(cfg)
        stream = BlockStream(token_blocks(cfg, tok), cfg.batch_size, cfg.seed, acc.process_index, acc.num_processes)
        val = _val_blocks(cfg, tok) if (cfg.val_blocks and acc.is_main_process) else None
        _CONTEXT.clear()  # one suite family at a time: keep memory flat
        _CONTEXT[key] = (tok, stream, val, acc)
    return _CONTEXT[key]


def _exporter(cfg: Config, tok, root: Path, val, accelerator):
    def export(model, series, label, step, elapsed, diverged_step=None):
        from ..foundation import evaluate
        out = root / series / "ckpt" / label
        models.save_model(model, out, tok)
        nparams = models.count_params(model)
        rec = {"label": label, "tokens": step * cfg.tokens_per_step(), "step": step, "params": nparams,
               "tokens_per_param": step * cfg.tokens_per_step() / nparams, "wall_s": elapsed,
               "schedule": series, "model": cfg.model, "seed": cfg.seed, "lr": cfg.lr}
        if val is not None:
            was = model.training
            model.eval()
            dev = next(model.parameters()).device
            with accelerator.autocast() if accelerator.mixed_precision != "no" else contextlib.nullcontext():
                r = evaluate.perplexity(model, val.to(dev), batch_size=16)
            model.train(was)
            rec.update(val_ppl=r["ppl"], val_loss=r["loss"])
        bad_val = val is not None and not math.isfinite(rec["val_loss"])
        rec.update(diverged=diverged_step is not None or bad_val, diverged_step=diverged_step,
                   diverged_reason=(f"non-finite training loss at step {diverged_step}" if diverged_step is not None
                                    else f"non-finite validation loss at step {step}" if bad_val else ""))
        if rec["diverged"] and val is not None:  # a diverged model's perplexity is not a score
            rec.update(val_ppl=math.nan, val_loss=math.nan)
        results.atomic_write_json(out.with_name(label + ".record.json"), rec)
    return export


def wait_for_parent(unit: Unit, poll_s: float = 0.5) -> None:
    """Block until ``unit``'s parent state exists (it is being made by ``unit.after``, running on
    another worker); raise if that job ends without making it."""
    root = Path(unit.root)
    while not _ready(root, unit.job):
        maker = root / "state" / f"{unit.after}.done.json"
        if maker.is_file() and not _ready(root, unit.job):
            raise RuntimeError(f"{unit.job.name}: job {unit.after} ended without the state {unit.job.parent} "
                               f"(see {maker})")
        time.sleep(poll_s)


def run_unit(unit: Unit, accelerator=None, stop_after: int | None = None) -> dict:
    """Train (or resume, or skip if done) one job; the worker function of :func:`train_suites`."""
    if unit.after is not None:
        wait_for_parent(unit)
    tok, stream, val, acc = _context(unit.cfg, accelerator)
    root = Path(unit.root)
    return train_job(unit.cfg, unit.job, root, stream, tok, acc, _exporter(unit.cfg, tok, root, val, acc),
                     unit.progress, stop_after)


def _done(root: Path, job: Job) -> dict | None:
    f = root / "state" / f"{job.name}.done.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _ready(root: Path, job: Job) -> bool:
    return job.parent is None or (root / "state" / f"{job.parent}.pt").is_file() or \
        (root / "state" / f"{job.name}.pt").is_file()
