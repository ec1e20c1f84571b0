"""Fan a chapter's units out as a SLURM job array (through ``submitit``), into one results store.

Command line::

    python -m coft_utils submit 03_fixed_lr_finetuning --profile paper --partition gpu --slices 16 \\
        --timeout-min 240 --account myproj            # SLURM array of 16 jobs, 1 GPU each
    python -m coft_utils submit 02_gaussian_sensitivity --profile paper --dry-run    # the slices only
    python -m coft_utils submit 02_gaussian_sensitivity --profile smoke --executor local --slices 2
    python -m coft_utils run 03_fixed_lr_finetuning --profile paper   # afterwards: renders from the records

Example output (``--executor local`` at smoke, one job killed, one preempted; see tests/test_submit.py)::

    [coft] submit 02_gaussian_sensitivity @ smoke: 2 work items in 2 slices (local); submitit folder ...
      slice 0: ck c0
      slice 1: ck c1
    [coft] submitted 2 jobs: 4173, 4174
    [coft] job 4173 (ck c0) failed: Job 4173 (task: 0) with path .../4173_0_result.pkl (log: ...)
    [coft] resubmitting 1 slice(s) (attempt 2 of 2); the store resumes them
    [coft] all 2 slices done. Now: python -m coft_utils run 02_gaussian_sensitivity --profile smoke renders
    the notebook from these records without recomputing

What it does, in order, before anything is submitted (each failure is a clear error, exit 1):

1. resolves the chapter's config (``profiles.resolve``: bad parameters fail here);
2. at ``gpu``/``paper``: the pre-flight (:func:`coft_utils.foundation.preflight.check_config`:
   missing revisions, duplicate-weight checkpoints);
3. chapters 01-04 on the project's suite (``series='suite'``) **refuse** while chapter 00's suite
   at that profile is not built (``pretrain.cached_suite``): submit chapter 00 first and wait
   for it (this module does not chain arrays with SLURM dependencies: the suite's checkpoint
   labels and weights must exist for the later chapters' units to be named);
4. lists the chapter's *work items* (the ``job`` column of ``python -m coft_utils plan``) and
   deals them into ``--slices`` slices, balanced by the plan's FLOPs (longest first);
5. submits one array job per slice with ``executor.map_array`` (``--executor slurm``:
   ``submitit.AutoExecutor``; ``local``: ``submitit.LocalExecutor``, what the tests use).

Each job is a :class:`SliceJob`, a ``submitit.helpers.Checkpointable``: on preemption or timeout
submitit calls its ``checkpoint()``, which resubmits the same slice; the rerun resumes from the
results store (every chapter writes one atomic record per unit and skips units that are done).
With ``--wait`` (default for ``local``) the command waits for the array and resubmits the
slices of jobs that failed otherwise (e.g. killed: ``--retries``, default 2). Afterwards
``python -m coft_utils run CHAPTER --profile P`` renders the notebook from the records without
recomputing a unit.

Work items per chapter (each a restriction of the chapter's own public compute function, with
records keyed per unit so that slices and a full run share them):

* 00: one pre-training job of ``pretrain_plan.plan`` per cosine budget, and the warmup-stable
  trunk with its wsd decay branches and the constant schedule as one item (the branches start
  from the trunk's states); run by ``pretrain.train_suites`` restricted to those jobs, with
  ``budgets=n_budgets`` so that no series.json is assembled from a part (the notebook's
  ``all_suites`` assembles it from the finished jobs). The LR scan (smoke/cpu) stays in the notebook.
* 01: one checkpoint (``instruct.run`` with ``checkpoints=[label]``): its base evaluation, SFT
  per (LR, seed) and tuned evaluations (the LR choice needs all LRs of a checkpoint).
* 02: one checkpoint (``perturb.sweep`` with ``checkpoints=[label]``, and the comparison sweep).
* 03, 04: one (checkpoint, LR) with every task and seed (``finetune.sweep`` with
  ``checkpoints=[label]``, ``lrs=[lr]``; restricting tasks would change the config's validation).
* 05: one CPU unit, no results store: the job executes the notebook (``run.run_notebook``).

``--gpus-per-node G`` > 1 (chapters 00, 01, 03, 04) runs each slice under
``torchrun --nproc_per_node G``; the chapters' distributed paths (DDP / FSDP through the
``Trainer``) do the rest, and rank 0 writes the records.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..foundation import profiles

REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = ["SubmitError", "work_items", "split", "SliceJob", "run_slice", "submit", "main"]

CHAPTERS = ("00_pretraining_suite", "01_instruction_tuning", "02_gaussian_sensitivity", "03_fixed_lr_finetuning",
            "04_lr_sweep", "05_linear_theory", "06_mitigations")
MULTI_GPU = ("00_pretraining_suite", "01_instruction_tuning", "03_fixed_lr_finetuning", "04_lr_sweep")
FAULT_ENV = "COFT_SUBMIT_FAULT"  # tests only: see _install_fault_hook
ENV_KEYS = ("COFT_RUNS_DIR", "COFT_CACHE_DIR", "COFT_DATA_DIR", "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE",
            "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


class SubmitError(RuntimeError):
    """Something that makes a submission pointless or wrong (the message says what to do)."""


# --------------------------------------------------------------------------- work items
def _resolve(chapter: str, profile: str, overrides: dict | None, seed: int | None = None):
    if chapter not in CHAPTERS:
        raise profiles.ProfileError(f"unknown chapter {chapter!r}; allowed: {', '.join(CHAPTERS)}")
    return profiles.resolve(chapter, profile, overrides, seed=seed)


def _require_suite(cfg) -> None:
    """Refuse (SubmitError) while the suite a chapter on ``series='suite'`` needs is not built."""
    if getattr(cfg, "series", None) != "suite":
        return
    from ..chapters import pretrain
    from ..foundation import results
    model = getattr(cfg, "suite_model", "")
    hint = (f"the suite it runs on is not built yet at profile {cfg.profile!r} (schedule {cfg.schedule!r}"
            + (f", model {model!r}" if model else "") + "); build it first: python -m coft_utils submit "
            f"00_pretraining_suite --profile {cfg.profile}" + (f" -p model {model}" if model else "")
            + f" (or python -m coft_utils run 00_pretraining_suite --profile {cfg.profile}), wait for it, then "
            "submit this chapter again")
    # cheap first: no finished suite of this schedule at all (cached_suite may train a tokenizer)
    if not list((results.runs_dir() / "suite").glob(f"*/{cfg.schedule}/series.json")):
        raise SubmitError(hint)
    if pretrain.cached_suite(cfg.profile, cfg.schedule, 0, {"model": model} if model else None) is None:
        raise SubmitError(hint)


def _series_labels(cfg) -> list[str]:
    from ..foundation import series
    if cfg.__class__.__module__.endswith("instruct"):
        from ..chapters import instruct
        return [c.label for c in instruct.get_series(cfg)]
    return [c.label for c in series.for_config(cfg)]


def work_items(chapter: str, cfg) -> list[dict]:
    """The chapter's work items: ``{"label": <plan's job>, "overrides": {...}}`` (00: ``jobs``)."""
    if chapter == "00_pretraining_suite":
        from ..chapters import pretrain, pretrain_plan
        items: dict[str, dict] = {}
        for sched in pretrain.SCHEDULES:
            c = dataclasses.replace(cfg, schedule=sched)
            for j in pretrain_plan.plan(c):
                label = j.name if j.kind == "cosine" else f"trunk+wsd @ lr {c.peak_lr():g}"
                it = items.setdefault(label, {"label": label, "schedules": [], "jobs": []})
                if sched not in it["schedules"]:
                    it["schedules"].append(sched)
                if j.name not in it["jobs"]:
                    it["jobs"].append(j.name)
        return list(items.values())
    if chapter in ("05_linear_theory", "06_mitigations"):  # 06: one job over chapters 02-04's units
        return [{"label": "all", "overrides": {}}]
    labels = _series_labels(cfg)
    if chapter in ("03_fixed_lr_finetuning", "04_lr_sweep"):
        return [{"label": f"ck {lab} lr {lr:g}", "overrides": {"checkpoints": [lab], "lrs": [lr]}}
                for lab in labels for lr in cfg.lrs]
    return [{"label": f"ck {lab}", "overrides": {"checkpoints": [lab]}} for lab in labels]


def split(items: list[dict], n: int, weights: dict[str, float] | None = None) -> list[list[dict]]:
    """``items`` dealt into at most ``n`` non-empty slices, balanced by ``weights[label]``
    (longest first onto the lightest slice); equal weights give a round-robin."""
    if not (isinstance(n, int) and n >= 1):
        raise SubmitError(f"--slices must be an integer >= 1, got {n!r}")
    n = min(n, len(items))
    w = weights or {}
    order = sorted(range(len(items)), key=lambda i: (-w.get(items[i]["label"], 1.0), i))
    slices: list[list[int]] = [[] for _ in range(n)]
    load = [0.0] * n
    for i in order:
        k = min(range(n), key=lambda j: (load[j], j))
        slices[k].append(i)
        load[k] += w.get(items[i]["label"], 1.0)
    return [[items[i] for i in sorted(s)] for s in slices if s]


# --------------------------------------------------------------------------- running a slice
def _merge(base: dict, items: list[dict], key: str) -> list:
    out = []
    for it in items:
        for v in it["overrides"].get(key, []):
            if v not in out:
                out.append(v)
    return out


def run_slice(chapter: str, profile: str, overrides: dict, seed: int | None, items: list[dict]) -> dict:
    """Compute the units of ``items`` into the chapter's results store (what one array job runs)."""
    t0 = time.time()
    over = dict(overrides or {})
    if chapter == "00_pretraining_suite":
        from ..chapters import pretrain
        names = {j for it in items for j in it["jobs"]}
        scheds = [s for s in pretrain.SCHEDULES if any(s in it["schedules"] for it in items)]
        over.pop("schedule", None)
        cfgs = [pretrain.resolve(profile, s, seed or 0, over) for s in scheds]
        orig = pretrain.plan
        # train_suites computes the jobs of pretrain.plan: this slice's only (the chapter module
        # is not edited; the restriction lives in this process)
        pretrain.plan = lambda cfg, budgets=None: [j for j in orig(cfg, budgets) if j.name in names]
        try:
            pretrain.train_suites(cfgs, budgets=max(c.n_budgets for c in cfgs), progress=False)
        finally:
            pretrain.plan = orig
    elif chapter == "01_instruction_tuning":
        from ..chapters import instruct
        cfg = _resolve(chapter, profile, {**over, "checkpoints": _merge(over, items, "checkpoints")}, seed)
        instruct.run(cfg, progress=False)  # removes only its own trainer folders
    elif chapter == "02_gaussian_sensitivity":
        from ..chapters import perturb
        cfg = _resolve(chapter, profile, {**over, "checkpoints": _merge(over, items, "checkpoints")}, seed)
        s = perturb.load_series(cfg)
        perturb.sweep(s, cfg, progress=False)
        if cfg.other_scale() is not None:
            perturb.sweep(s, cfg.other_scale(), progress=False)
    elif chapter in ("03_fixed_lr_finetuning", "04_lr_sweep"):
        from ..chapters import finetune
        for it in items:  # a (checkpoint, lr) each: the product of a slice's labels and LRs is not the slice
            cfg = _resolve(chapter, profile, {**over, **it["overrides"]}, seed)
            finetune.sweep(finetune.load_series(cfg), cfg)
    elif chapter == "06_mitigations":  # chapters 02-04's units per schedule and strength, in their stores
        from ..chapters import mitigate
        mitigate.run_all(_resolve(chapter, profile, over, seed))
    elif chapter == "05_linear_theory":
        from . import run
        run.run_notebook(chapter, profile, {**over, **({"seed": seed} if seed is not None else {})}, progress=False)
    else:
        raise SubmitError(f"no work items for chapter {chapter!r}")
    return {"chapter": chapter, "items": [it["label"] for it in items], "wall_s": round(time.time() - t0, 1)}


def _install_fault_hook(items: list[dict]) -> None:
    """Tests only (``COFT_SUBMIT_FAULT``, a JSON list of ``{"item", "after", "kind", "marker"}``): in
    the job whose slice holds ``item``, after its ``after``-th record, once (``marker`` file):
    ``kill`` ends the process at once (``os._exit(137)``, like SIGKILL: no clean-up, no requeue),
    ``preempt`` sends this process submitit's preemption signal (requeue through ``checkpoint``)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    mine = [f for f in json.loads(spec) if f["item"] in {it["label"] for it in items}]
    if not mine:
        return
    from ..foundation import results
    orig = results.Store.write
    count = {"n": 0}

    def write(self, *a, **k):
        out = orig(self, *a, **k)
        count["n"] += 1
        for f in mine:
            m = Path(f["marker"])
            if count["n"] >= int(f["after"]) and not m.exists():
                m.parent.mkdir(parents=True, exist_ok=True)
                m.write_text(str(os.getpid()))
                if f["kind"] == "kill":
                    os._exit(137)
                from submitit.core.job_environment import JobEnvironment
                os.kill(os.getpid(), JobEnvironment._usr_sig())
                time.sleep(5)  # the handler requeues (exits) at the next bytecode
        return out
    results.Store.write = write


try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # submitit is an extra: only `submit` needs it
    _Checkpointable = object


class SliceJob(_Checkpointable):
    """One array job: ``job(items)`` computes a slice into the store. Checkpointable: on
    preemption / timeout submitit resubmits ``self(items)`` (``checkpoint`` keeps the default:
    the same callable and slice), and the store makes the rerun resume."""

    def __init__(self, chapter: str, profile: str, overrides: dict, seed: int | None, env: dict,
                 gpus: int = 1, repo: str | None = None):
        self.chapter, self.profile, self.overrides, self.seed = chapter, profile, dict(overrides), seed
        self.env, self.gpus, self.repo = dict(env), int(gpus), repo
        self.attempts = 0

    def __call__(self, items: list[dict]) -> dict:
        self.attempts += 1
        os.environ.update(self.env)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if self.gpus > 1 and self.chapter in MULTI_GPU:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.gpus}",
                   "-m", "coft_utils.book.submit", "--run-slice", json.dumps(
                       {"chapter": self.chapter, "profile": self.profile, "overrides": self.overrides,
                        "seed": self.seed, "items": items})]
            subprocess.run(cmd, check=True, cwd=self.repo)
            return {"chapter": self.chapter, "items": [it["label"] for it in items], "attempts": self.attempts}
        _install_fault_hook(items)
        out = run_slice(self.chapter, self.profile, self.overrides, self.seed, items)
        out["attempts"] = self.attempts
        return out


# --------------------------------------------------------------------------- submitting
def _preflight(cfg) -> None:
    """Pre-flight at gpu/paper for chapters on a checkpoint series (raises SubmitError)."""
    if cfg.profile not in ("gpu", "paper") or not hasattr(cfg, "series"):
        return
    from ..foundation import preflight
    try:
        preflight.check_config(cfg)
    except preflight.PreflightError as e:
        raise SubmitError(f"pre-flight failed for {type(cfg).__module__} at {cfg.profile!r}: {e}") from None


def _executor(kind: str, folder: Path, *, partition, gpus_per_node, timeout_min, account, cpus_per_task,
              parallelism, name):
    import submitit
    if kind == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=timeout_min)
        return ex
    if kind != "slurm":
        raise SubmitError(f"unknown executor {kind!r}; allowed: slurm, local")
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = dict(timeout_min=timeout_min, nodes=1, tasks_per_node=1, gpus_per_node=gpus_per_node,
                  cpus_per_task=cpus_per_task, name=name, slurm_array_parallelism=parallelism)
    if partition:
        params["slurm_partition"] = partition
    if account:
        params["slurm_account"] = account
    ex.update_parameters(**params)
    return ex


def submit(chapter: str, profile: str, overrides: dict | None = None, seed: int | None = None, *,
           executor: str = "slurm", slices: int | None = None, folder: str | os.PathLike | None = None,
           partition: str | None = None, gpus_per_node: int = 1, timeout_min: int = 240,
           account: str | None = None, cpus_per_task: int = 8, parallelism: int = 64, dry_run: bool = False,
           wait: bool | None = None, retries: int = 2, echo=print) -> dict:
    """Submit ``chapter``'s work items as a job array; returns ``{"slices", "jobs", "failed", ...}``."""
    from . import plan as plan_mod
    from ..foundation import results
    profiles.get_profile(profile)
    overrides = dict(overrides or {})
    cfg = _resolve(chapter, profile, overrides, seed)
    if executor not in ("slurm", "local"):
        raise SubmitError(f"unknown executor {executor!r}; allowed: slurm, local")
    if not (isinstance(gpus_per_node, int) and gpus_per_node >= 1):
        raise SubmitError(f"--gpus-per-node must be an integer >= 1, got {gpus_per_node!r}")
    if gpus_per_node > 1 and chapter not in MULTI_GPU:
        raise SubmitError(f"--gpus-per-node {gpus_per_node}: chapter {chapter!r} runs on one device per job; "
                          f"allowed: 1 (more only for {', '.join(MULTI_GPU)})")
    if chapter != "00_pretraining_suite":
        _require_suite(cfg)  # first: the pre-flight of a suite series needs the built suite
    _preflight(cfg)
    items = work_items(chapter, cfg)
    try:
        p = plan_mod.chapter_plan(chapter, profile, overrides, seed)
        weights: dict[str, float] = {}
        for u in p.units:
            weights[u.job] = weights.get(u.job, 0.0) + u.flops
    except Exception as e:  # noqa: BLE001 -- a plan that cannot be priced only loses the balancing
        echo(f"[coft] submit: no plan weights ({e}); slices balanced by item count")
        weights = {}
    n = slices or len(items)
    parts = split(items, n, weights)
    folder = Path(folder) if folder else results.runs_dir() / profile / "_submitit" / chapter
    echo(f"[coft] submit {chapter} @ {profile}: {len(items)} work items in {len(parts)} slices "
         f"({executor}{', dry run' if dry_run else ''}); submitit folder {folder}")
    for i, s in enumerate(parts):
        echo(f"  slice {i}: " + ", ".join(it["label"] for it in s))
    if executor == "slurm":
        echo(f"  sbatch: partition={partition or '(default)'} account={account or '(default)'} nodes=1 "
             f"gpus_per_node={gpus_per_node} cpus_per_task={cpus_per_task} timeout_min={timeout_min} "
             f"array parallelism={parallelism}; requeue on preemption/timeout (submitit checkpoint)")
    out = {"chapter": chapter, "profile": profile, "items": items, "slices": parts, "jobs": [], "failed": []}
    if dry_run:
        return out
    env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    env.setdefault("COFT_RUNS_DIR", str(results.runs_dir()))
    fn = SliceJob(chapter, profile, overrides, seed, env, gpus_per_node, str(REPO_ROOT))
    ex = _executor(executor, folder, partition=partition, gpus_per_node=gpus_per_node, timeout_min=timeout_min,
                   account=account, cpus_per_task=cpus_per_task, parallelism=parallelism, name=f"coft-{chapter[:2]}")
    jobs = ex.map_array(fn, parts)
    out["jobs"] = [j.job_id for j in jobs]
    echo(f"[coft] submitted {len(jobs)} jobs: {', '.join(out['jobs'])}")
    wait = executor == "local" if wait is None else wait
    if not wait:
        echo(f"[coft] when they are done: python -m coft_utils run {chapter} --profile {profile} renders the "
             "notebook from their records without recomputing (submit again to redo what failed)")
        return out
    pending = list(zip(jobs, parts))
    for attempt in range(retries + 1):
        failed = []
        for job, part in pending:
            try:
                out.setdefault("results", []).append(job.result())
            except Exception as e:  # noqa: BLE001 -- a killed or failed job: resubmit its slice
                echo(f"[coft] job {job.job_id} ({', '.join(it['label'] for it in part)}) failed: "
                     f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__} (log: {folder})")
                failed.append(part)
        if not failed or attempt == retries:
            out["failed"] = failed
            break
        echo(f"[coft] resubmitting {len(failed)} slice(s) (attempt {attempt + 2} of {retries + 1}); the store "
             "resumes them")
        new = ex.map_array(fn, failed)
        out["jobs"] += [j.job_id for j in new]
        out.setdefault("resubmitted", []).extend(j.job_id for j in new)
        pending = list(zip(new, failed))
    if out["failed"]:
        echo(f"[coft] {len(out['failed'])} slice(s) still failed after {retries} resubmission(s); logs in {folder}")
    else:
        echo(f"[coft] all {len(parts)} slices done. Now: python -m coft_utils run {chapter} --profile {profile} "
             "renders the notebook from these records without recomputing")
    return out


def main(a) -> int:
    """The ``submit`` subcommand (arguments parsed by ``coft_utils.book.run``)."""
    params = a.params
    res = submit(a.chapter, a.profile, params, params.pop("seed", None) if "seed" in params else None,
                 executor=a.executor, slices=a.slices, folder=a.folder, partition=a.partition,
                 gpus_per_node=a.gpus_per_node, timeout_min=a.timeout_min, account=a.account, dry_run=a.dry_run,
                 wait=a.wait, retries=a.retries)
    return 1 if res["failed"] else 0


def _run_slice_cli(argv=None) -> int:
    """``python -m coft_utils.book.submit --run-slice JSON``: one slice in this process (under torchrun)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-slice", required=True)
    a = ap.parse_args(argv)
    d = json.loads(a.run_slice)
    run_slice(d["chapter"], d["profile"], d["overrides"], d["seed"], d["items"])
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.exit(_run_slice_cli())
