"""The results store: one record per finished unit of work, written atomically, with provenance.

A *unit* is a dict that names one piece of work (series, checkpoint, experiment parameters,
seed). Its record holds the unit, the metrics, the resolved config, and provenance (package
versions, git commit, data checksums, device, time). A rerun skips units already done, so a
run killed at any point resumes without losing or duplicating a record::

    from coft_utils.foundation import results
    store = results.Store("02_gaussian_sensitivity", profile="cpu")
    units = [{"checkpoint": c, "gamma": g, "seed": s} for c in ... for g in ... for s in ...]
    recs = store.run(units, lambda u: {"ppl": ...}, config=cfg, data_names=["gutenberg_top100_authors"])
    df = store.frame()            # one row per record: unit fields + metrics + record_id

Records live in ``$COFT_RUNS_DIR/<profile>/<experiment>/<unit hash>.json`` (default
``runs/`` in the repository). Each is written to a temporary file, flushed to disk and renamed
into place, so a record is either complete or absent.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = ["Store", "provenance", "unit_id", "config_hash", "atomic_write_json", "runs_dir", "git_commit",
           "package_versions"]

_PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "accelerate", "trl", "lm_eval",
             "numpy", "sympy", "papermill")


def reserved_stores() -> set[str]:
    """Store names a chapter's ``experiment`` parameter may not take: every chapter's own store
    (its name in the registry), the claims page's, the suite's folder and the runner's log."""
    from . import registry
    names = set(registry.names()) | {"claims", "suite", "runner_log.jsonl"}
    return names | {f"{n}_base" for n in names}


def runs_dir() -> Path:
    env = os.environ.get("COFT_RUNS_DIR")
    return Path(env).expanduser() if env else REPO_ROOT / "runs"


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)  # "inf", "nan": JSON has no such numbers
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
        return _jsonable(v.item())
    if hasattr(v, "to_dict") and callable(v.to_dict):
        return _jsonable(v.to_dict())
    if isinstance(v, Path):
        return str(v)
    return v


def _unjson(v):
    if isinstance(v, str) and v in ("inf", "-inf", "nan"):
        return float(v)
    if isinstance(v, dict):
        return {k: _unjson(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unjson(x) for x in v]
    return v


def config_hash(obj, n: int = 16) -> str:
    """A short stable hash of a JSON-able configuration (cache keys of suites, training settings)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:n]


def unit_id(unit: Mapping) -> str:
    canon = json.dumps(_jsonable(dict(unit)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:20]


@functools.lru_cache(maxsize=1)
def git_commit() -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": sha or "unknown", "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


@functools.lru_cache(maxsize=1)
def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = version(p.replace("_", "-"))
        except PackageNotFoundError:
            try:
                out[p] = version(p)
            except PackageNotFoundError:
                pass
    from .. import __version__
    out["coft_utils"] = __version__
    return out


def device_info() -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count()}
    if "torch" in sys.modules:
        import torch
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda"] = torch.cuda.get_device_name(0)
    return info


def provenance(config=None, data_names: Iterable[str] = ()) -> dict:
    from . import data
    names = list(data_names)
    return {
        "config": _jsonable(config.to_dict() if hasattr(config, "to_dict") else (config or {})),
        "packages": package_versions(),
        "git": git_commit(),
        "data_sha256": data.checksums(names) if names else {},
        "device": device_info(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def atomic_write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON to a temporary file, flush it to disk, rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(_jsonable(obj), fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_record(p: Path) -> dict | None:
    """The record in ``p``; None when there is none. A file that does not parse as a record
    (truncated, empty, edited by hand) is named on stderr and moved aside to
    ``<name>.damaged-<UTC time>`` (kept for inspection), so its unit is computed again."""
    try:
        text = p.read_text()
    except FileNotFoundError:
        return None
    try:
        rec = _unjson(json.loads(text))
        if not (isinstance(rec, dict) and isinstance(rec.get("unit"), dict) and isinstance(rec.get("metrics"), dict)):
            raise ValueError("not a record (no 'unit' and 'metrics' mappings)")
        return rec
    except ValueError as e:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside = p.with_name(f"{p.name}.damaged-{stamp}")
        try:
            os.replace(p, aside)
        except FileNotFoundError:  # another process moved it first
            return None
        print(f"[coft] warning: record {p} does not parse ({str(e)[:120]}); moved to {aside.name}, its unit "
              "will be computed again", file=sys.stderr, flush=True)
        return None


class Store:
    """Records of one experiment at one profile (a folder of JSON files, one per unit)."""

    def __init__(self, experiment: str, profile: str = "cpu", root: str | os.PathLike | None = None):
        if not experiment or "/" in experiment:
            raise ValueError(f"experiment must be a non-empty name without '/', got {experiment!r}")
        self.experiment, self.profile = experiment, profile
        self.dir = Path(root) if root is not None else runs_dir() / profile / experiment

    def path(self, unit: Mapping) -> Path:
        return self.dir / f"{unit_id(unit)}.json"

    def done(self, unit: Mapping) -> bool:
        """A record that parses exists (a damaged one is moved aside: the unit is computed again)."""
        return self.get(unit) is not None

    def get(self, unit: Mapping) -> dict | None:
        return _read_record(self.path(unit))

    def write(self, unit: Mapping, metrics: Mapping, config=None, data_names: Iterable[str] = (),
              extra: Mapping | None = None, prov: Mapping | None = None) -> dict:
        """One record; ``prov`` is a :func:`provenance` computed once for a whole run."""
        prov = dict(prov) if prov is not None else provenance(config, data_names)
        prov["time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        rec = {"experiment": self.experiment, "profile": self.profile, "unit": _jsonable(dict(unit)),
               "metrics": _jsonable(dict(metrics)), **prov}
        if extra:
            rec["extra"] = _jsonable(dict(extra))
        atomic_write_json(self.path(unit), rec)
        return _unjson(rec)

    def records(self) -> list[dict]:
        if not self.dir.is_dir():
            return []
        recs = [r for r in map(_read_record, sorted(self.dir.glob("*.json"))) if r is not None]
        return sorted(recs, key=lambda r: json.dumps(r["unit"], sort_keys=True))

    def frame(self):
        import pandas as pd
        rows = [{**r["unit"], **r["metrics"], "record_id": unit_id(r["unit"])} for r in self.records()]
        return pd.DataFrame(rows)

    def run(self, units: Iterable[Mapping], fn: Callable[[dict], Mapping], config=None,
            data_names: Iterable[str] = (), desc: str | None = None, progress: bool = True) -> list[dict]:
        """Run ``fn(unit)`` for every unit not yet done; write each record as it finishes."""
        units = [dict(u) for u in units]
        ids = [unit_id(u) for u in units]
        if len(set(ids)) != len(ids):
            raise ValueError("units must be distinct")
        todo = [u for u in units if not self.done(u)]
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(units), initial=len(units) - len(todo),
                       desc=desc or f"{self.experiment} [{self.profile}]", leave=False)
        prov = provenance(config, data_names) if todo else None  # checksums etc. once per run
        for u in todo:
            metrics = fn(u)
            self.write(u, metrics, prov=prov)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return [self.get(u) for u in units]

    def clear(self) -> None:
        import shutil
        if self.dir.is_dir():
            shutil.rmtree(self.dir)
