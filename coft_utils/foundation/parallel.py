"""Independent units of work in N worker processes of one torch thread each (joblib / loky).

The CPU profiles run on small machines (2 cores) where one tiny model per core beats one
model on two threads: units that do not depend on each other (the pre-training suite's
cosine budgets, fine-tuning units, perturbation points) go to ``workers`` processes::

    from coft_utils.foundation import parallel
    out = parallel.map_units(train_one, units, workers=2)          # results in input order
    out = parallel.map_units(train_one, units, workers=1)          # in-process: no pool, same results

Contract of ``map_units(fn, items, workers=1, *, threads=1, label=None, progress=False, desc=None)``:

* ``fn`` is a picklable **top-level** function (module level, no lambda or closure) and every
  item (and what ``fn`` returns) is picklable; ``fn(item)`` is called once per item.
* Results come back in the order of ``items``, whatever order the units finish in. Items are
  handed out in input order, one at a time, so put the longest units first (a 2-worker run of
  units of sizes 32, 16, 8, 4, 2, 1 then ends after 32).
* Each worker sets ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` to
  ``threads`` when it starts and calls ``torch.set_num_threads(threads)`` before every unit;
  ``workers=1`` runs in this process with the same torch thread count (restored afterwards),
  so a deterministic ``fn`` gives the same numbers at any ``workers``. ``threads=None`` leaves
  the thread settings alone (and the pool's default thread limits).
* The environment variables that steer this project (``COFT_*``, ``HF_*``, ``TRANSFORMERS_*``,
  ``TOKENIZERS_PARALLELISM``) are sent with every unit, so a reused worker sees the caller's
  current runs/cache folders, not those of the call that started it.
* A unit that raises stops the map: the exception reaches the caller with its own type, a note
  naming the unit (``label(item)``, default ``repr(item)``) and the attribute ``coft_unit``;
  the other workers are stopped.
* Nothing is written here: ``fn`` itself writes its record atomically (``results.Store.write``,
  ``results.atomic_write_json``) as each unit finishes, and skips units already done, so a killed
  run resumes where it stopped. Workers must not take a lock the caller holds.
* Inside a worker ``map_units`` runs in-process (no nested pools).

Workers are loky's reusable processes: started on first use (a few seconds: Python, torch and
``coft_utils`` are imported), reused by later calls, stopped after 5 idle minutes.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any, Callable, Iterable, Sequence

__all__ = ["map_units", "in_worker", "default_workers", "shutdown", "quiet"]

_ENV_PREFIXES = ("COFT_", "HF_", "TRANSFORMERS_", "TOKENIZERS_PARALLELISM")
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_WORKER_FLAG = "COFT_PARALLEL_WORKER"


def in_worker() -> bool:
    """True inside a ``map_units`` worker process."""
    return os.environ.get(_WORKER_FLAG) == "1"


def default_workers() -> int:
    """Workers for a CPU run of this machine: its usable cores (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _label(label: Callable | None, item: Any) -> str:
    try:
        s = label(item) if label is not None else repr(item)
    except Exception:  # a label must never hide the real error
        s = object.__repr__(item)
    return s if len(s) <= 200 else s[:197] + "..."


def _project_env() -> dict:
    return {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}


def _set_env(env: dict) -> None:
    for k in [k for k in os.environ if k.startswith(_ENV_PREFIXES) and k not in env and k != _WORKER_FLAG]:
        del os.environ[k]
    os.environ.update(env)


def _set_threads(threads: int | None) -> int | None:
    """Pin torch (and the BLAS env of children) to ``threads``; return the previous torch count."""
    if threads is None:
        return None
    for k in _THREAD_ENV:
        os.environ[k] = str(threads)
    import torch
    old = torch.get_num_threads()
    if old != threads:
        torch.set_num_threads(threads)
    return old


def _name_error(exc: BaseException, name: str) -> BaseException:
    try:
        exc.coft_unit = name
        exc.add_note(f"[coft_utils.foundation.parallel] in unit {name} (process {os.getpid()})")
    except Exception:  # exceptions without __dict__ (rare builtins): keep them as they are
        pass
    return exc


def _call(fn: Callable, item: Any, name: str, env: dict, threads: int | None, index: int):
    """Run one unit in a worker: project env, one torch thread, the unit named on failure."""
    _set_env(env)
    os.environ[_WORKER_FLAG] = "1"
    quiet()  # no progress bars from the workers (their stderr is the notebook's)
    _set_threads(threads)
    try:
        return index, fn(item)
    except BaseException as e:
        raise _name_error(e, name)


def map_units(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 1, *, threads: int | None = 1,
              label: Callable[[Any], str] | None = None, progress: bool = False,
              desc: str | None = None) -> list:
    """``[fn(item) for item in items]`` on ``workers`` processes of ``threads`` torch threads each.

    ``workers=1`` (or a single item, or a call from inside a worker) runs in this process. See
    the module docstring for the contract (picklable top-level ``fn``, input order, errors).
    """
    items: Sequence = list(items)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an integer >= 1 or None, got {threads!r}")
    if not items:
        return []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(items), desc=desc or getattr(fn, "__name__", "units"), leave=False)
    try:
        if workers == 1 or len(items) == 1 or in_worker():
            return _serial(fn, items, threads, label, bar)
        return _pool(fn, items, min(workers, len(items)), threads, label, bar)
    finally:
        if bar is not None:
            bar.close()


def _serial(fn, items, threads, label, bar) -> list:
    old = _set_threads(threads)
    saved_env = {k: os.environ.get(k) for k in _THREAD_ENV}
    out = []
    try:
        for item in items:
            try:
                out.append(fn(item))
            except BaseException as e:
                raise _name_error(e, _label(label, item))
            if bar is not None:
                bar.update(1)
    finally:
        if old is not None:
            import torch
            torch.set_num_threads(old)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return out


def _pool(fn, items, workers, threads, label, bar) -> list:
    from joblib import Parallel, delayed, parallel_config
    env = _project_env()
    names = [_label(label, it) for it in items]
    tasks = (delayed(_call)(fn, it, names[i], env, threads, i) for i, it in enumerate(items))
    out: list = [None] * len(items)
    cfg = {"backend": "loky", "n_jobs": workers}
    if threads is not None:
        cfg["inner_max_num_threads"] = threads
    with parallel_config(**cfg):
        # one item per dispatch, in input order; results as they come (for the progress bar)
        run = Parallel(batch_size=1, pre_dispatch="n_jobs", return_as="generator_unordered")
        for i, res in run(tasks):
            out[i] = res
            if bar is not None:
                bar.update(1)
    return out


def shutdown() -> None:
    """Stop the reusable worker processes now (they also stop by themselves when idle)."""
    from joblib.externals.loky import reusable_executor
    ex = reusable_executor._executor
    if ex is not None:
        ex.shutdown(wait=True)


def _probe(seconds: float = 0.0) -> dict:  # used by tests and the benchmark: who ran me, how
    import torch
    if seconds:
        time.sleep(seconds)
    return {"pid": os.getpid(), "torch_threads": torch.get_num_threads(),
            "omp": os.environ.get("OMP_NUM_THREADS"), "worker": in_worker()}


def quiet() -> None:
    """Silence progress bars and chatty loggers of transformers/datasets inside notebooks."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bar too
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    for name in ("transformers", "datasets", "accelerate", "huggingface_hub", "lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as tlog
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except Exception:  # transformers not imported yet / not installed: nothing to silence
        pass
    try:
        import datasets
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except Exception:
        pass
