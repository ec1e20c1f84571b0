"""Checkpoint series: their definition, the built-in hub series, and which series a chapter runs on.

A *checkpoint series* is an ordered list of checkpoints of one model family, each with a label,
its pre-training tokens and a source: a hub id + revision (what A100 users run) or a local
folder (what the project trains here). Every chapter takes a series, so pointing the companion
at your own model family is one JSON/YAML file or one dict::

    from coft_utils.foundation import series
    s = series.get_series("olmo-1b")                   # built-in: the paper's OLMo-1B revisions
    s.checkpoints[0].revision                          # 'step10000-tokens41B'
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

Hub revision names are pinned here as explicit lists copied from public lists of each
repository's branches (the source is named next to each list, and ``PUBLIC_BRANCHES`` holds the
lists they are tested against; ``KNOWN_DUPLICATES`` the branches known to share weights).
:func:`check_revisions` reports pinned revisions a repository lacks (online: its refs; offline:
the local hub cache), and :mod:`coft_utils.foundation.preflight` adds the duplicate-weight check
before a paper-scale run spends GPU hours.

``Checkpoint``, ``CheckpointSeries``, ``SeriesError``, ``SERIES``, ``get_series`` and
``check_revisions`` are also importable from :mod:`coft_utils.foundation.models` (their former
home); the weights' identity is in :mod:`coft_utils.foundation.weights`.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from . import registry

__all__ = ["Checkpoint", "CheckpointSeries", "SeriesError", "SERIES", "get_series", "check_revisions",
           "for_config", "runs_for_config", "load", "suite", "FILE_SUFFIXES", "SUITE_CHAPTER"]


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

    def save(self, path: str | os.PathLike, relative: bool = False) -> Path:
        """Write the series as JSON; ``relative``: checkpoint folders inside the file's folder are
        written relative to it (a copied or moved folder then reads its own weights: :func:`load`
        resolves relative paths against the file's folder)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        d = self.to_dict()
        if relative:
            base = p.resolve().parent
            for c in d["checkpoints"]:
                q = Path(c["path"]).resolve() if c.get("path") else None
                if q is not None and q.is_relative_to(base):
                    c["path"] = q.relative_to(base).as_posix()
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(d, indent=1))
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
# Every pinned hub revision below is copied from a public list of that repository's branches (the
# source sits next to each list; book/checkpoints.md has the table). No name is derived by a rule
# unless the repository documents that rule (Pythia). Names not confirmed by a public source are
# not pinned; a confirmed neighbour is used instead (noted where it happens).

# allenai/OLMo-1B-hf. Steps that exist: the official list of OLMo-1B's checkpoints,
# allenai/OLMo checkpoints/official/OLMo-1B.csv at commit 794a9e9fcdd8f67bc2b62f057995f3eb42717120
# (351 rows, the same count as the hf repository's step branches; it jumps from 117850 to 330000,
# allenai/OLMo issue #879: "the checkpoints provided are the only ones we have").
OLMO1B_CSV_STEPS = (
    1000, 2000, 3000, 4000, 5000, 10000, 11000, 12000, 13000, 14000, 15000, 16000, 17000, 18000,
    20000, 30000, 40000, 50000, 52000, 53000, 54000, 55000, 56000, 57000, 58000, 59000, 60000,
    63000, 64000, 65000, 66000, 67000, 68000, 69000, 70000, 71000, 80000, 90000, 95000, 96000,
    97000, 98000, 99000, 100000, 101000, 102000, 103000, 104000, 105000, 106000, 110000, 111000,
    112000, 113000, 114000, 115000, 116000, 117000, 117850, 330000, 331000, 332000, 333000, 334000,
    335000, 336000, 337000, 337700, 340000, 342000, 343000, 344000, 345000, 346000, 347000, 348000,
    349000, 349350, 350000, 353000, 354000, 355000, 356000, 357000, 358000, 359000, 360000, 360850,
    364000, 365000, 366000, 367000, 368000, 369000, 370000, 371000, 371900, 373000, 374000, 375000,
    376000, 377000, 378000, 379000, 380000, 381000, 385000, 386000, 387000, 388000, 389000, 390000,
    391000, 392000, 392550, 397000, 398000, 399000, 400000, 401000, 402000, 403000, 404000, 404150,
    405000, 406000, 407000, 408000, 409000, 410000, 413000, 414000, 415000, 416000, 417000, 418000,
    419000, 420000, 420650, 424000, 425000, 426000, 427000, 428000, 429000, 430000, 431000, 431900,
    436000, 437000, 438000, 439000, 440000, 441000, 442000, 443000, 443400, 444000, 445000, 446000,
    447000, 448000, 450000, 452000, 453000, 454000, 455000, 456000, 457000, 458000, 459000, 459400,
    460000, 463000, 464000, 465000, 466000, 467000, 468000, 469000, 470000, 470750, 475000, 476000,
    477000, 478000, 479000, 480000, 481000, 482000, 482050, 486000, 487000, 488000, 489000, 490000,
    491000, 492000, 493000, 493050, 497000, 498000, 499000, 500000, 501000, 502000, 503000, 504000,
    504200, 505000, 509000, 510000, 511000, 512000, 513000, 514000, 515000, 516000, 516250, 520000,
    521000, 522000, 523000, 524000, 525000, 526000, 527000, 527150, 530000, 531000, 532000, 533000,
    534000, 535000, 536000, 537000, 538000, 538100, 540000, 542000, 543000, 544000, 545000, 546000,
    547000, 548000, 549000, 549700, 550000, 554000, 555000, 556000, 557000, 558000, 559000, 560000,
    561000, 561250, 565000, 566000, 567000, 568000, 569000, 570000, 571000, 572000, 572850, 577000,
    578000, 579000, 580000, 581000, 582000, 583000, 584000, 584550, 589000, 590000, 591000, 592000,
    593000, 594000, 595000, 596000, 596100, 597000, 598000, 599000, 600000, 601000, 605000, 606000,
    607000, 608000, 609000, 610000, 611000, 612000, 612650, 615000, 616000, 617000, 618000, 619000,
    620000, 621000, 622000, 623000, 624000, 624150, 628000, 629000, 630000, 631000, 632000, 633000,
    634000, 635000, 635850, 636000, 637000, 638000, 639000, 639650, 640000, 650000, 660000, 670000,
    680000, 690000, 693000, 694000, 695000, 696000, 697000, 698000, 699000, 700000, 701000, 710000,
    720000, 730000, 731000, 732000, 733000, 734000, 735000, 736000, 737000, 738000, 738020,
)
# The hf repository's branch names carry their own token counts, which no formula reproduces
# (e.g. step738000-tokens3094B, where round(738000 x 4,194,304 / 1e9) = 3095). The names below
# are copied verbatim from public sources that load allenai/OLMo-1B-hf with revision=: issue 15
# of this project quotes step10000-tokens41B, step738000-tokens3094B and step738020-tokens3094B;
# the rest appear in third-party public GitHub code found by exact-string search. The quoted
# strings are in book/checkpoints.md (lists A-D), e.g. "step1000-tokens4B step343000-tokens1438B
# step425000-tokens1781B step509000-tokens2134B step593000-tokens2486B step738020-tokens3094B".
OLMO1B_HF_BRANCHES = (
    "step1000-tokens4B", "step5000-tokens20B", "step10000-tokens41B", "step20000-tokens83B",
    "step40000-tokens167B", "step80000-tokens335B", "step110000-tokens461B", "step117850-tokens494B",
    "step330000-tokens1383B", "step343000-tokens1438B", "step369000-tokens1547B",
    "step425000-tokens1781B", "step460000-tokens1928B", "step509000-tokens2134B",
    "step593000-tokens2486B", "step620000-tokens2599B", "step640000-tokens2683B",
    "step720000-tokens3018B", "step738000-tokens3094B", "step738020-tokens3094B",
)
# Pinned: 0.04T .. 3.1T with points near the paper's 1.5T, 2.5T and 3T (Fig. 1). No confirmed
# hf branch lies near 2.3T (step550000's hf name is not in any public list found), so 2.13T
# (step509000) and 2.49T (step593000) stand in for it.
OLMO1B_PINNED = ("step10000-tokens41B", "step40000-tokens167B", "step117850-tokens494B",
                 "step330000-tokens1383B", "step369000-tokens1547B", "step460000-tokens1928B",
                 "step509000-tokens2134B", "step593000-tokens2486B", "step640000-tokens2683B",
                 "step720000-tokens3018B", "step738020-tokens3094B")

# allenai/OLMo-2-1124-7B, stage 1. Steps that exist: allenai/OLMo
# configs/official-1124/OLMo-2-1124-7B.csv at commit 59a53e3f68e546330ca5a99ec626e58f9ab96494;
# the final stage-1 branch stage1-step928646-tokens3896B: allenai/OLMo README.md at that commit.
# The other names as public code loads them (revision=), found by exact search.
OLMO2_7B_BRANCHES = (
    "stage1-step1000-tokens5B", "stage1-step50000-tokens210B", "stage1-step101000-tokens424B",
    "stage1-step150000-tokens630B", "stage1-step175000-tokens735B", "stage1-step200000-tokens839B",
    "stage1-step250000-tokens1049B", "stage1-step300000-tokens1259B", "stage1-step400000-tokens1678B",
    "stage1-step500000-tokens2098B", "stage1-step502000-tokens2106B", "stage1-step599000-tokens2513B",
    "stage1-step600000-tokens2517B", "stage1-step753000-tokens3159B", "stage1-step928646-tokens3896B",
)
# Branches whose weight files are byte-identical although their steps differ (never pin two of
# one group; preflight.check refuses them from the hashes themselves):
# allenai/OLMo issue #915: stage1-step101000-tokens424B, stage1-step175000-tokens735B and
# stage1-step300000-tokens1259B share all six shards' LFS sha256 (first shard f9acbd5400251483...);
# issue 15 of this project names steps 101000, 209000 and 300000.
KNOWN_DUPLICATES: dict[str, tuple[tuple[str, ...], ...]] = {
    "allenai/OLMo-2-1124-7B": (("stage1-step101000-tokens424B", "stage1-step175000-tokens735B",
                                "stage1-step300000-tokens1259B"),),
}
# Steps to stay away from in OLMo-2-1124-7B stage 1: 100000 (no stage1-step100000-tokens420B
# branch, issue 15), 101000/175000/209000/300000 (duplicate weights, above). 700000 and 800000
# are not pinned (their hf names are not in a public list found); 753000 stands in.
OLMO2_7B_PINNED = ("stage1-step50000-tokens210B", "stage1-step150000-tokens630B",
                   "stage1-step200000-tokens839B", "stage1-step250000-tokens1049B",
                   "stage1-step400000-tokens1678B", "stage1-step500000-tokens2098B",
                   "stage1-step600000-tokens2517B", "stage1-step753000-tokens3159B",
                   "stage1-step928646-tokens3896B")

# EleutherAI/pythia-*: the README (EleutherAI/pythia README.md at commit
# a19eecb807ec2c79a39ebf18108816e6ffffc1d5) documents 154 branches per model: "steps 0
# (initialization), 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, and then every 1,000 subsequent
# steps" up to step143000 (= main), 2,097,152 tokens per step. Known duplicate-weight branches
# (EleutherAI/pythia #205: pythia-2.8b; #206: pythia-12b step50000/step58000; #83: step0 = step1)
# concern sizes and steps not pinned here.
PYTHIA_BRANCHES = tuple(f"step{s}" for s in (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, *range(1000, 143001, 1000)))
# Pinned: doubling steps (~2B .. 134B tokens, the Pythia-70M reproduction report's range) + final
PYTHIA_STEPS = (1000, 2000, 4000, 8000, 16000, 32000, 64000, 143000)

# LLM360/Amber: its model card (huggingface.co/LLM360/Amber, "Loading Amber") says revisions
# "ckpt_000" .. "ckpt_358" load by name and no revision loads "ckpt_359", the final checkpoint;
# 360 checkpoints of ~3.5B tokens (1.26T in all; LLM360 paper, arXiv 2312.06550). The ckpt_*
# branches hold pytorch_model.bin (loaded with weights_only=True, see models.load_model).
AMBER_BRANCHES = tuple(f"ckpt_{k:03d}" for k in range(359))
AMBER_PINNED = (10, 30, 60, 100, 150, 200, 250, 300, 358)  # 358: the last named branch

# hub id -> the public list its pinned revisions are checked against (tests/test_series_revisions.py)
PUBLIC_BRANCHES: dict[str, tuple[str, ...]] = {
    "allenai/OLMo-1B-hf": OLMO1B_HF_BRANCHES,
    "allenai/OLMo-2-1124-7B": OLMO2_7B_BRANCHES,
    "LLM360/Amber": AMBER_BRANCHES,
    **{f"EleutherAI/pythia-{s}": PYTHIA_BRANCHES for s in ("70m", "160m", "410m", "1b")},
}


def _rev_step(rev: str) -> int:
    """The step of an OLMo/Pythia branch name ('step738020-tokens3094B', 'stage1-step50000-...')."""
    m = re.search(r"step(\d+)", rev)
    if not m:
        raise SeriesError(f"revision {rev!r} names no step")
    return int(m.group(1))


def _hub_label(t: float) -> str:  # labels of the built-in hub checkpoints (part of their identity)
    return f"{t / 1e12:.2f}T" if t >= 1e12 else f"{t / 1e9:.0f}B" if t >= 1e9 else f"{t / 1e6:.0f}M"


def _hub_series(name, hub_id, revisions, tokens_per_step, description):
    cks = [Checkpoint(_hub_label(_rev_step(r) * tokens_per_step), _rev_step(r) * tokens_per_step, hub_id, r)
           for r in revisions]
    return CheckpointSeries(name, tuple(cks), description)


SERIES: dict[str, CheckpointSeries] = {}


def _register(s: CheckpointSeries):
    SERIES[s.name] = s


_register(_hub_series("olmo-1b", "allenai/OLMo-1B-hf", OLMO1B_PINNED, 4_194_304,
                      "OLMo-1B intermediate checkpoints (paper Section 2, Figs. 1-2)"))
_register(_hub_series("olmo-2-7b-stage1", "allenai/OLMo-2-1124-7B", OLMO2_7B_PINNED,
                      4_194_304, "OLMo-2-7B stage-1 checkpoints"))
_register(CheckpointSeries("amber", tuple(
    Checkpoint(_hub_label((k + 1) * 3.5e9), (k + 1) * 3.5e9, "LLM360/Amber", f"ckpt_{k:03d}")
    for k in AMBER_PINNED), "LLM360 Amber-7B (360 checkpoints of ~3.5B tokens)"))
for _size in ("70m", "160m", "410m", "1b"):
    _register(_hub_series(f"pythia-{_size}", f"EleutherAI/pythia-{_size}", [f"step{s}" for s in PYTHIA_STEPS],
                          2_097_152, f"Pythia-{_size} (2M tokens per step)"))


def _relative_to(file: Path, d):
    """A series file's relative checkpoint ``path`` s (and a relative ``tokenizer`` folder that
    exists there) resolved against the file's own folder, not the working directory."""
    if not isinstance(d, dict):
        return d
    base = Path(file).resolve().parent
    d = dict(d)
    cks = d.get("checkpoints")
    if isinstance(cks, list):
        d["checkpoints"] = [{**c, "path": str((base / c["path"]).resolve())}
                            if isinstance(c, dict) and isinstance(c.get("path"), str) and c["path"]
                            and not os.path.isabs(os.path.expanduser(c["path"])) else c for c in cks]
    tok = d.get("tokenizer")
    if isinstance(tok, str) and tok and not os.path.isabs(tok) and (base / tok).is_dir():
        d["tokenizer"] = str((base / tok).resolve())
    return d


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
            try:
                d = json.loads(p.read_text())
            except ValueError as e:
                raise SeriesError(f"series file {p} is not valid JSON (line {getattr(e, 'lineno', '?')}, column "
                                  f"{getattr(e, 'colno', '?')}): {getattr(e, 'msg', e)}") from None
            return CheckpointSeries.from_dict(_relative_to(p, d))
        if p.suffix == ".json":
            raise SeriesError(f"series file {p} does not exist")
    raise SeriesError(f"unknown series {spec!r}; allowed: a built-in name ({', '.join(SERIES)}), "
                      "a path to a series .json file, or a dict")


def check_revisions(series: CheckpointSeries, online: bool | None = None) -> dict[str, list[str]]:
    """{hub_id: [missing revisions]} for the hub checkpoints of ``series`` (empty lists: all
    present). Online (default unless ``HF_HUB_OFFLINE`` is set): the repository's branches and
    tags (``list_repo_refs``). Offline: the local hub cache's ``refs/`` (``HF_HUB_CACHE``)."""
    from .weights import _hub_cache_dir, _offline
    if online is None:
        online = not _offline()
    missing: dict[str, list[str]] = {}
    for hub_id in sorted({c.hub_id for c in series if c.hub_id and not c.path}):
        revs = [c.revision or "main" for c in series if c.hub_id == hub_id and not c.path]
        if online:
            from huggingface_hub import list_repo_refs
            refs = list_repo_refs(hub_id)
            have = {b.name for b in refs.branches} | {t.name for t in refs.tags}
            missing[hub_id] = [r for r in revs if r not in have and not re.fullmatch(r"[0-9a-f]{40}", r)]
        else:
            from huggingface_hub.file_download import repo_folder_name
            refs_dir = _hub_cache_dir() / repo_folder_name(repo_id=hub_id, repo_type="model") / "refs"
            missing[hub_id] = [r for r in revs if not (refs_dir / r).is_file()
                               and not (re.fullmatch(r"[0-9a-f]{40}", r)
                                        and (refs_dir.parent / "snapshots" / r).is_dir())]
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
        from . import safeyaml
        try:
            d = safeyaml.load(p.read_text(), f"series file {p}")  # no aliases, 100e9 a number, dates as text
        except safeyaml.YAMLInputError as e:
            raise SeriesError(str(e)) from None
        if not isinstance(d, dict):
            raise SeriesError(f"series file {p} must hold a mapping with 'name' and 'checkpoints'")
        return CheckpointSeries.from_dict(_relative_to(p, json.loads(json.dumps(d))))
    return get_series(spec)


def suite(profile: str, schedule: str = "cosine", seed: int = 0, progress: bool = False,
          overrides: dict | None = None) -> CheckpointSeries:
    """The project's pre-training suite at ``profile`` (trained on first use, then cached);
    ``overrides`` are chapter 00 parameters (e.g. ``{"model": "olmo-90m"}``)."""
    return registry.experiment(SUITE_CHAPTER).get_suite(profile, schedule=schedule, seed=seed, overrides=overrides,
                                                        progress=progress)


def runs_for_config(cfg, progress: bool = False) -> list[CheckpointSeries]:
    """Every pre-training run a chapter config measures: :func:`for_config`'s series, then, for
    the suite with ``pretrain_runs`` > 1, chapter 00's runs of ``cfg.schedule`` at seeds 1 .. n-1
    (each its own series name), restricted to ``cfg.checkpoints`` alike."""
    out = [for_config(cfg, progress)]
    model = getattr(cfg, "suite_model", "")
    for r in range(1, getattr(cfg, "pretrain_runs", 1)):
        s = suite(cfg.profile, cfg.schedule, r, progress, overrides={"model": model} if model else None)
        out.append(s.select(cfg.checkpoints) if cfg.checkpoints else s)
    return out


def for_config(cfg, progress: bool = False) -> CheckpointSeries:
    """The series a chapter config names (``series``: 'suite', a built-in name or a file; the
    suite at ``cfg.profile`` and ``cfg.schedule``), restricted to ``cfg.checkpoints`` when given."""
    if cfg.series == "suite":
        model = getattr(cfg, "suite_model", "")
        s = suite(cfg.profile, cfg.schedule, 0, progress, overrides={"model": model} if model else None)
    else:
        s = load(cfg.series)
    return s.select(cfg.checkpoints) if cfg.checkpoints else s
