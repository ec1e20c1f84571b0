"""Checkpoint series: their definition, the built-in hub series, and which series a chapter runs on.

A *checkpoint series* is an ordered list of checkpoints of one model family, each with a label,
its pre-training tokens and a source: a hub id + revision (what A100 users run) or a local
folder (what the project trains here). Every chapter takes a series, so pointing the companion
at your own model family is one JSON/YAML file or one dict::

    from coft_utils.foundation import series
    s = series.get_series("olmo-1b")                   # built-in: the paper's OLMo-1B revisions
    s.checkpoints[0].revision                          # 'step10000-tokens42B'
    s = series.get_series({"name": "mine", "checkpoints": [
        {"label": "10B", "tokens": 10e9, "hub_id": "me/model", "revision": "step1000"},
        {"label": "20B", "tokens": 20e9, "path": "/data/ckpt-2000"}]})
    s = series.for_config(cfg)                 # a chapter's series: the suite at cfg.profile
                                               # (trained once, cached) / built-in / file
    s = series.load("my_checkpoints.yaml")     # a user's series: JSON or YAML, same fields

Every chapter on a checkpoint series (a :class:`~coft_utils.foundation.profiles.SeriesConfig`:
``series``, ``schedule``, ``checkpoints``) gets its series from :func:`for_config`, so no chapter
imports another. A user's file holds ``{"name": ..., "checkpoints": [{"label", "tokens",
"hub_id" + "revision" | "path"}, ...]}`` in token order (see :class:`CheckpointSeries`). The
suite comes from the pre-training chapter, found through the chapter registry
(``00_pretraining_suite``'s experiment module, ``get_suite``), imported only when asked for.

Hub revision names are pinned here. They follow each repository's scheme (OLMo-1B-hf:
``stepN-tokensMB`` with M = round(N x 4,194,304 / 1e9); OLMo-2 stage 1:
``stage1-stepN-tokensMB`` with M = ceil(N x 4,194,304 / 1e9); Pythia: ``stepN``; Amber:
``ckpt_KKK``); :func:`check_revisions` lists a repository's refs online and reports any that
are missing, before a paper-scale run spends GPU hours.

``Checkpoint``, ``CheckpointSeries``, ``SeriesError``, ``SERIES``, ``get_series`` and
``check_revisions`` are also importable from :mod:`coft_utils.foundation.models` (their former
home); the weights' identity is in :mod:`coft_utils.foundation.weights`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from . import registry

__all__ = ["Checkpoint", "CheckpointSeries", "SeriesError", "SERIES", "get_series", "check_revisions",
           "for_config", "load", "suite", "FILE_SUFFIXES", "SUITE_CHAPTER"]


class SeriesError(ValueError):
    """A checkpoint or series definition that is not valid."""


@dataclass(frozen=True)
class Checkpoint:
    label: str
    tokens: float  # pre-training tokens seen by this checkpoint
    hub_id: str | None = None
    revision: str | None = None
    path: str | None = None  # local folder (takes precedence over hub_id)

    def __post_init__(self):
        if not (self.path or self.hub_id):
            raise SeriesError(f"checkpoint {self.label!r} needs a local 'path' or a 'hub_id'")
        if not (isinstance(self.tokens, (int, float)) and self.tokens >= 0 and math.isfinite(self.tokens)):
            raise SeriesError(f"checkpoint {self.label!r}: tokens must be a finite number >= 0, "
                              f"got {self.tokens!r}")

    @property
    def source(self) -> str:
        return self.path if self.path else f"{self.hub_id}@{self.revision or 'main'}"

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class CheckpointSeries:
    name: str
    checkpoints: tuple[Checkpoint, ...]
    description: str = ""
    tokenizer: str | None = None  # hub id or folder; default: each checkpoint's own
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.checkpoints:
            raise SeriesError(f"series {self.name!r} has no checkpoints")
        toks = [c.tokens for c in self.checkpoints]
        if toks != sorted(toks):
            raise SeriesError(f"series {self.name!r}: checkpoints must be ordered by tokens, got {toks}")
        labels = [c.label for c in self.checkpoints]
        if len(set(labels)) != len(labels):
            raise SeriesError(f"series {self.name!r}: labels must be unique, got {labels}")

    def __len__(self):
        return len(self.checkpoints)

    def __iter__(self):
        return iter(self.checkpoints)

    def select(self, labels: Iterable[str]) -> "CheckpointSeries":
        want = list(labels)
        have = {c.label: c for c in self.checkpoints}
        bad = [l for l in want if l not in have]
        if bad:
            raise SeriesError(f"series {self.name!r} has no checkpoint(s) {bad}; allowed: {list(have)}")
        return CheckpointSeries(self.name, tuple(c for c in self.checkpoints if c.label in want),
                                self.description, self.tokenizer, dict(self.meta))

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "tokenizer": self.tokenizer,
                "meta": self.meta, "checkpoints": [c.to_dict() for c in self.checkpoints]}

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, p)
        return p

    @classmethod
    def from_dict(cls, d: Mapping) -> "CheckpointSeries":
        try:
            cks = tuple(Checkpoint(**c) for c in d["checkpoints"])
            return cls(d["name"], cks, d.get("description", ""), d.get("tokenizer"), dict(d.get("meta") or {}))
        except (KeyError, TypeError) as e:
            raise SeriesError(f"not a valid series definition ({e}); expected "
                              "{'name': ..., 'checkpoints': [{'label', 'tokens', 'hub_id'+'revision' | 'path'}]}") from None


# --------------------------------------------------------------------------- built-in series
def _olmo1_rev(step: int) -> str:
    return f"step{step}-tokens{round(step * 4_194_304 / 1e9)}B"


def _olmo2_rev(step: int) -> str:
    return f"stage1-step{step}-tokens{math.ceil(step * 4_194_304 / 1e9)}B"


def _hub_label(t: float) -> str:  # labels of the built-in hub checkpoints (part of their identity)
    return f"{t / 1e12:.2f}T" if t >= 1e12 else f"{t / 1e9:.0f}B" if t >= 1e9 else f"{t / 1e6:.0f}M"


def _hub_series(name, hub_id, steps, rev, tokens_per_step, description, final_main=None):
    cks = [Checkpoint(_hub_label(s * tokens_per_step), s * tokens_per_step, hub_id, rev(s)) for s in steps]
    if final_main:
        cks.append(Checkpoint(f"final ({_hub_label(final_main)})", final_main, hub_id, "main"))
    return CheckpointSeries(name, tuple(cks), description)


# OLMo-1B (0.04T .. 3.1T; points near 1.5T, 2.3T, 2.5T and 3T as in the paper's Fig. 1)
OLMO1B_STEPS = (10000, 50000, 100000, 200000, 300000, 360000, 450000, 550000, 600000, 650000,
                700000, 738000)
# OLMo-2-1124-7B stage-1 (up to ~3.9T tokens)
OLMO2_7B_STEPS = (50000, 100000, 200000, 300000, 400000, 500000, 600000, 700000, 800000, 928646)
# Pythia: doubling steps (~2B .. 134B tokens, the Pythia-70M reproduction report's range) + final
PYTHIA_STEPS = (1000, 2000, 4000, 8000, 16000, 32000, 64000, 143000)

SERIES: dict[str, CheckpointSeries] = {}


def _register(s: CheckpointSeries):
    SERIES[s.name] = s


_register(_hub_series("olmo-1b", "allenai/OLMo-1B-hf", OLMO1B_STEPS, _olmo1_rev, 4_194_304,
                      "OLMo-1B intermediate checkpoints (paper Figs. 1-2, 3-5)"))
_register(_hub_series("olmo-2-7b-stage1", "allenai/OLMo-2-1124-7B", OLMO2_7B_STEPS, _olmo2_rev,
                      4_194_304, "OLMo-2-7B stage-1 checkpoints"))
_register(CheckpointSeries("amber", tuple(
    Checkpoint(_hub_label((k + 1) * 3.5e9), (k + 1) * 3.5e9, "LLM360/Amber", f"ckpt_{k:03d}")
    for k in (10, 30, 60, 100, 150, 200, 250, 300, 359)), "LLM360 Amber-7B (360 checkpoints of ~3.5B tokens)"))
for _size in ("70m", "160m", "410m", "1b"):
    _register(_hub_series(f"pythia-{_size}", f"EleutherAI/pythia-{_size}", PYTHIA_STEPS,
                          lambda s: f"step{s}", 2_097_152, f"Pythia-{_size} (2M tokens per step)"))


def get_series(spec) -> CheckpointSeries:
    """A series from a built-in name, a JSON file path, a dict, or a series itself."""
    if isinstance(spec, CheckpointSeries):
        return spec
    if isinstance(spec, Mapping):
        return CheckpointSeries.from_dict(spec)
    if isinstance(spec, (str, os.PathLike)):
        if str(spec) in SERIES:
            return SERIES[str(spec)]
        p = Path(spec)
        if p.suffix == ".json" and p.is_file():
            return CheckpointSeries.from_dict(json.loads(p.read_text()))
        if p.suffix == ".json":
            raise SeriesError(f"series file {p} does not exist")
    raise SeriesError(f"unknown series {spec!r}; allowed: a built-in name ({', '.join(SERIES)}), "
                      "a path to a series .json file, or a dict")


def check_revisions(series: CheckpointSeries) -> dict[str, list[str]]:
    """Online only: {hub_id: [missing revisions]} for a hub series (empty lists: all present)."""
    from huggingface_hub import list_repo_refs
    missing: dict[str, list[str]] = {}
    for hub_id in {c.hub_id for c in series if c.hub_id and not c.path}:
        refs = list_repo_refs(hub_id)
        have = {b.name for b in refs.branches} | {t.name for t in refs.tags}
        missing[hub_id] = [c.revision for c in series if c.hub_id == hub_id and (c.revision or "main") not in have]
    return missing


# --------------------------------------------------------------------------- a chapter's series
FILE_SUFFIXES = (".json", ".yaml", ".yml")
SUITE_CHAPTER = "00_pretraining_suite"


def load(spec) -> CheckpointSeries:
    """A series from a built-in name, a ``.json``/``.yaml`` file, a dict or a series itself."""
    if isinstance(spec, (str, os.PathLike)) and Path(spec).suffix in (".yaml", ".yml"):
        p = Path(spec)
        if not p.is_file():
            raise SeriesError(f"series file {p} does not exist")
        import yaml
        try:
            d = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise SeriesError(f"series file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(d, dict):
            raise SeriesError(f"series file {p} must hold a mapping with 'name' and 'checkpoints'")
        return CheckpointSeries.from_dict(json.loads(json.dumps(d)))
    return get_series(spec)


def suite(profile: str, schedule: str = "cosine", seed: int = 0, progress: bool = False) -> CheckpointSeries:
    """The project's pre-training suite at ``profile`` (trained on first use, then cached)."""
    return registry.experiment(SUITE_CHAPTER).get_suite(profile, schedule=schedule, seed=seed, progress=progress)


def for_config(cfg, progress: bool = False) -> CheckpointSeries:
    """The series a chapter config names (``series``: 'suite', a built-in name or a file; the
    suite at ``cfg.profile`` and ``cfg.schedule``), restricted to ``cfg.checkpoints`` when given."""
    s = suite(cfg.profile, cfg.schedule, 0, progress) if cfg.series == "suite" else load(cfg.series)
    return s.select(cfg.checkpoints) if cfg.checkpoints else s
