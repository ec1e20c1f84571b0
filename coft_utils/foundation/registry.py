"""The chapter registry: the one place that says which chapters the book has.

Each chapter is a notebook ``notebooks/<name>.py`` with an *experiment* module (``Config``,
``PRESETS``, its units of work) and a *report* module (summaries, tables, figures, claim
verdicts), a title (the notebook's heading), the part of the book it sits in (``_toc.yml``) and
the claims of the paper it tests. ``profiles`` (parameter presets), ``claims`` (which chapter
decides a claim), the runner (book order) and ``python -m coft_utils list`` all read it, and a
test checks it against ``_toc.yml`` and the notebooks::

    from coft_utils.foundation import registry
    registry.names()                          # book order
    ch = registry.get("03_fixed_lr_finetuning")
    ch.experiment, ch.report, ch.claims       # module names, claim ids
    registry.experiment("03_fixed_lr_finetuning").PRESETS
    registry.chapter_of("ushape_fixed_lr")    # '03_fixed_lr_finetuning'

To add a chapter: write ``notebooks/NN_slug.py``, its experiment and report modules under
``coft_utils/chapters/``, one :class:`Chapter` line below, its line in ``_toc.yml`` and its claims
in ``coft_utils/book/claims.py``. Nothing here is imported until asked for (module names are
strings), so this module sits at the bottom layer without importing any chapter.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = ["Chapter", "CHAPTERS", "names", "get", "experiment", "report", "chapter_of", "notebook"]


@dataclass(frozen=True)
class Chapter:
    name: str  # the notebook's stem, also the chapter's id everywhere
    title: str  # the notebook's first heading
    part: str  # the caption of its part in _toc.yml
    experiment: str  # module: Config, PRESETS, units of work run through the results store
    report: str  # module: summaries, tables, figures and the chapter's claim verdicts
    claims: tuple[str, ...] = ()  # the claims (coft_utils.book.claims.CLAIMS) this chapter decides

    @property
    def notebook(self) -> Path:
        return REPO_ROOT / "notebooks" / f"{self.name}.py"


_C = "coft_utils.chapters."
CHAPTERS: dict[str, Chapter] = {c.name: c for c in (
    Chapter("00_pretraining_suite", "The controlled pre-training suite", "Chapters",
            _C + "pretrain", _C + "pretrain_report", ("base_improves",)),
    Chapter("01_instruction_tuning", "Instruction tuning across pre-training checkpoints", "Chapters",
            _C + "instruct", _C + "instruct_report", ("olmo_instruction", "cpu_general_ability")),
    Chapter("02_gaussian_sensitivity", "Gaussian perturbations: progressive sensitivity", "Chapters",
            _C + "perturb", _C + "perturb_report",
            ("sensitivity_noise_init", "ushape_noise_init", "sensitivity_noise_empirical", "ushape_noise_empirical")),
    Chapter("03_fixed_lr_finetuning", "Fine-tuning at a fixed learning rate: forgetting grows with pre-training",
            "Chapters", _C + "finetune", _C + "finetune_report",
            ("forgetting_grows", "ushape_fixed_lr", "earlier_larger_lr")),
    Chapter("04_lr_sweep", "Tuning the fine-tuning learning rate per checkpoint", "Chapters",
            _C + "finetune", _C + "finetune_report", ("lr_tuning_later", "lr_tuning_remains")),
    Chapter("05_linear_theory", "Catastrophic overtraining in a two-layer linear network", "Chapters",
            _C + "theory", _C + "theory_report", ("linear_incremental", "linear_ushape", "linear_regularization")),
    Chapter("06_mitigations", "What mitigates catastrophic overtraining: schedule, regularization, smaller learning rates",
            "Chapters", _C + "mitigate", _C + "mitigate_report",
            ("anneal_sensitivity", "anneal_forgetting", "short_anneal", "anneal_inflection", "l2_forgetting",
             "l2_inflection", "lr_rule")),
    Chapter("98_verdicts", "How verdicts are decided", "Summary", _C + "calibration", _C + "calibration"),
    Chapter("99_claims", "The paper's claims, checked", "Summary", "coft_utils.book.claims", "coft_utils.book.claims"),
)}


def names() -> list[str]:
    """Every chapter, in notebook order (00 … 06, 98, 99)."""
    return sorted(CHAPTERS)


def get(name: str) -> Chapter:
    if name not in CHAPTERS:
        from .profiles import ProfileError
        raise ProfileError(f"unknown chapter {name!r}; allowed: {', '.join(names())}")
    return CHAPTERS[name]


def experiment(name: str):
    """The chapter's experiment module (imported on first use)."""
    return importlib.import_module(get(name).experiment)


def report(name: str):
    """The chapter's report module (imported on first use)."""
    return importlib.import_module(get(name).report)


def chapter_of(claim_id: str) -> str:
    """The chapter that decides ``claim_id``."""
    for c in CHAPTERS.values():
        if claim_id in c.claims:
            return c.name
    raise KeyError(f"no chapter decides claim {claim_id!r}")


def notebook(name: str) -> Path:
    return get(name).notebook
