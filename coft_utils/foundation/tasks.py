"""Fine-tuning tasks: real data sets from ``../shared/data`` cast as language modelling.

Every task turns records of a registered data set (:mod:`coft_utils.foundation.data`) into examples
``{"prompt": str, "target": str, "choices": [str, ...], "label": int}``: the model is trained on
``prompt + target`` with the loss on the target tokens only. Classification tasks put a
*verbalized* label in ``target`` (a prompt template + one word per class, the paper's controlled
set-up) and list every class's verbalizer in ``choices``; generative tasks (GSM8K, Python code)
have ``choices == []`` and ``label == -1``::

    from coft_utils.foundation import tasks
    tasks.names()                                    # every registered task
    t = tasks.get("sst2")                            # unknown name -> TaskError listing the allowed ones
    sp = tasks.splits("sst2", n_train=2000, n_val=200, n_test=500)   # {"train", "validation", "test"}
    sp["train"][0]   # {'prompt': 'Review: ...\\nSentiment:', 'target': ' positive',
                     #  'choices': [' negative', ' positive'], 'label': 1}

    # a new task is a few lines: a data set, its splits and a formatter
    tasks.register(tasks.Task(
        "mpqa", "classification", "mpqa",
        {"train": ("all", 0.0, 0.8), "validation": ("all", 0.8, 0.9), "test": ("all", 0.9, 1.0)},
        lambda r: ("Phrase: " + r["text"] + "\\nPolarity:", r["label"]), verbalizers=(" negative", " positive")))

Splits. Where the data set has an official split it is used; where one is missing, a split is
cut deterministically. Every source split is permuted with
``numpy.random.default_rng(SPLIT_SEED)`` (``SPLIT_SEED = 20250325``, fixed, independent of the
run's seed) and cut into consecutive pieces, so every machine gets the same examples (and
official splits such as SST-2's phrase-ordered train are shuffled before a prefix is taken).
The rules, per task:

=================  ===================================  ==========================================
task               data set                             train / validation / test
=================  ===================================  ==========================================
sst2               sst2_glue                            train / validation / test (labelled copy)
mr, cr, subj       mr, cr, subj ("all" only)            80 % / 10 % / 10 % cut of "all"
trec               trec                                 90 % / 10 % cut of train / test
rte                rte_glue                             90 % / 10 % cut of train / GLUE dev
tweeteval          tweeteval_sentiment (no train)       test minus 2,000 / validation / 2,000 of test
boolq              boolq (validation only)              80 % / 10 % / 10 % cut of validation
siqa               siqa_llmfoundry_2choice (val only)   80 % / 10 % / 10 % cut of validation
gsm8k              gsm8k                                95 % / 5 % cut of train / test
humaneval          humaneval (164 problems, test only)  80 % / 10 % / 10 % cut (prompt -> solution)
=================  ===================================  ==========================================

From the hub (profile ``paper``). ``tasks.splits(name, ..., source="hub")`` reads the task's
hub set through :mod:`coft_utils.foundation.hubdata` (``hubdata.load(task.hub, split,
source="hub")``: the same records and fields as the local copy, from the repository's own files
at a pinned revision) instead of ``../shared/data``; :func:`hub_names` lists the tasks that have
one. Where the hub copy lacks what the local one has, the task's ``hub_sources`` say how it is
cut instead (SST-2: GLUE's test labels are hidden on the hub, so the test split is the GLUE dev
set and validation is the last 1.5 % (1,010) of the permuted train sentences). Tasks whose local data is a
subset with no public hub layout we could confirm (mr, cr, subj, trec, rte, tweeteval, boolq,
siqa) have no hub set and are refused at ``paper`` with the list of those that do.

The paper's Section 3 fine-tuning data (as far as the public sources we could read name it: the
first author's summary and the arXiv abstract/HTML front matter; the per-task list in Appendix D
was not readable here and is NOT confirmed) include math (GSM8K), code (StarCoder-Python) and
classification sets. StarCoder-Python (``bigcode/starcoderdata``, ``python/``) is gated on the
hub (its terms must be accepted per account), so the public substitute is HumanEval below.

Python code: HumanEval (``openai/openai_humaneval``, in ``../shared/data`` and checksummed) is the
real Python source every machine of this project has; the task is "function signature +
docstring -> canonical body". The code is data only and is never executed. At paper scale the
paper fine-tunes on StarCoder Python, which would be one more :class:`Task` over a hub set.

Sizes: ``n_train``/``n_val``/``n_test`` take the *first* n examples of each (permuted)
split, so a smaller run uses a prefix of a larger run's examples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import data

__all__ = ["Task", "TaskError", "REGISTRY", "register", "get", "names", "hub_names", "splits", "SPLIT_SEED",
           "SPLITS", "SOURCES", "split_size"]

SPLIT_SEED = 20250325  # fixed: the cut splits never depend on the run's seed
SPLITS = ("train", "validation", "test")
SOURCES = ("local", "hub")  # where a task's records come from: ../shared/data or the hub (hubdata)


class TaskError(ValueError):
    """An unknown task or a task definition that is not valid."""


@dataclass(frozen=True)
class Task:
    """One fine-tuning task.

    ``sources`` maps each of train/validation/test to either a split name of ``dataset``
    (used as it is) or ``(source split, start fraction, end fraction)``: the slice
    ``[start, end)`` of that split after the fixed permutation; an int fraction bound means an
    absolute count (negative: from the end). ``format`` maps a record to ``(prompt, label)``
    for classification (``label`` indexes ``verbalizers``, or the record's own ``choices`` when
    ``choices_field`` is set) or ``(prompt, target)`` for generative tasks.
    """

    name: str
    kind: str  # "classification" | "generative"
    dataset: str
    sources: dict
    format: Callable
    verbalizers: tuple = ()
    choices_field: str | None = None  # per-example choices (multiple choice cast as classification)
    note: str = ""
    hub: str | None = None  # its set in coft_utils.foundation.hubdata (None: local only)
    hub_sources: dict | None = None  # how the hub set is cut (None: the same as ``sources``)

    def __post_init__(self):
        if self.kind not in ("classification", "generative"):
            raise TaskError(f"task {self.name!r}: kind must be 'classification' or 'generative', got {self.kind!r}")
        for what, src in (("sources", self.sources), ("hub_sources", self.hub_sources)):
            missing = [s for s in SPLITS if src is not None and s not in src]
            if missing:
                raise TaskError(f"task {self.name!r}: {what} lacks split(s) {missing}")
        if self.kind == "classification" and not (self.verbalizers or self.choices_field):
            raise TaskError(f"classification task {self.name!r} needs verbalizers or a choices_field")


REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    REGISTRY[task.name] = task
    return task


def names() -> list[str]:
    return list(REGISTRY)


def hub_names() -> list[str]:
    """The tasks that have a hub set (those a ``paper`` run may use)."""
    return [n for n, t in REGISTRY.items() if t.hub]


def get(name) -> Task:
    if isinstance(name, Task):
        return name
    if name not in REGISTRY:
        raise TaskError(f"unknown task {name!r}; allowed: {', '.join(REGISTRY)}")
    return REGISTRY[name]


# --------------------------------------------------------------------------- formatters
def _review(field_name="text", head="Review", tail="Sentiment"):
    return lambda r: (f"{head}: {r[field_name].strip()}\n{tail}:", int(r["label"]))


def _rte(r):
    return (f"Premise: {r['premise'].strip()}\nHypothesis: {r['hypothesis'].strip()}\n"
            f"Does the premise entail the hypothesis? Answer:", int(r["label"]))


def _mc(r):  # query already ends in "Question: ..." / "Answer:" (llm-foundry format)
    q = r["query"].rstrip()
    if not q.endswith(":"):
        q = q + "\nAnswer:"
    return q, int(r["gold"])


def _gsm8k(r):
    return f"Question: {r['question'].strip()}\nAnswer:", " " + r["answer"].strip()


def _humaneval(r):
    return r["prompt"], r["canonical_solution"]


_ALL3 = {"train": ("all", 0.0, 0.8), "validation": ("all", 0.8, 0.9), "test": ("all", 0.9, 1.0)}
_VAL3 = {"train": ("validation", 0.0, 0.8), "validation": ("validation", 0.8, 0.9),
         "test": ("validation", 0.9, 1.0)}
_TEST3 = {"train": ("test", 0.0, 0.8), "validation": ("test", 0.8, 0.9), "test": ("test", 0.9, 1.0)}

for _t in (
    Task("sst2", "classification", "sst2_glue", {"train": "train", "validation": "validation", "test": "test"},
         _review(), (" negative", " positive"), hub="sst2",
         hub_sources={"train": ("train", 0.0, 0.985), "validation": ("train", 0.985, 1.0), "test": "validation"},
         note="Hub (stanfordnlp/sst2): test labels are hidden, so test = the GLUE dev set (872) and "
              "validation = the last 1.5 % of the permuted train split (1,010 sentences)."),
    Task("mr", "classification", "mr", _ALL3, _review(), (" negative", " positive")),
    Task("cr", "classification", "cr", _ALL3, _review(), (" negative", " positive")),
    Task("subj", "classification", "subj", _ALL3, _review("text", "Sentence", "Subjectivity"),
         (" objective", " subjective")),
    Task("trec", "classification", "trec",
         {"train": ("train", 0.0, 0.9), "validation": ("train", 0.9, 1.0), "test": "test"},
         _review("text", "Question", "Answer type"),
         (" abbreviation", " description", " entity", " human", " location", " number")),
    Task("rte", "classification", "rte_glue",
         {"train": ("train", 0.0, 0.9), "validation": ("train", 0.9, 1.0), "test": "validation"},
         _rte, (" yes", " no"), note="GLUE test labels are hidden: the GLUE dev set is the test split."),
    Task("tweeteval", "classification", "tweeteval_sentiment",
         {"train": ("test", 0, -2000), "validation": "validation", "test": ("test", -2000, None)},
         _review("text", "Tweet", "Sentiment"), (" negative", " neutral", " positive"),
         note="No train split: the last 2,000 permuted test tweets are the test split, the rest train."),
    Task("boolq", "classification", "boolq", _VAL3, _mc, choices_field="choices",
         note="Only the validation split is local: cut 80/10/10."),
    Task("siqa", "classification", "siqa_llmfoundry_2choice", _VAL3, _mc, choices_field="choices",
         note="llm-foundry's 2-choice SIQA (A/B), validation only: cut 80/10/10."),
    Task("gsm8k", "generative", "gsm8k",
         {"train": ("train", 0.0, 0.95), "validation": ("train", 0.95, 1.0), "test": "test"}, _gsm8k,
         note="Question -> the worked answer (with its <<calc>> annotations and '#### n').", hub="gsm8k"),
    Task("humaneval", "generative", "humaneval", _TEST3, _humaneval, hub="humaneval",
         note="Python: signature + docstring -> canonical body (164 problems; never executed). The public "
              "substitute for the paper's StarCoder-Python, which is gated on the hub."),
):
    register(_t)


# --------------------------------------------------------------------------- splits
def _bound(x, n):
    if x is None:
        return n
    if isinstance(x, float):
        return int(round(x * n))
    return x if x >= 0 else n + x


def _sources(task: Task, source: str) -> dict:
    if source not in SOURCES:
        raise TaskError(f"unknown data source {source!r}; allowed: {', '.join(SOURCES)}")
    if source == "hub":
        if not task.hub:
            raise TaskError(f"task {task.name!r} has no hub data set; tasks with one: {', '.join(hub_names())}")
        return task.hub_sources or task.sources
    return task.sources


def split_size(name, split: str, source: str = "local") -> int | None:
    """Examples in a task's ``split``, from the data set's registered counts (nothing is loaded);
    None when the data set has no registered count for the source split."""
    task = get(name)
    src = _sources(task, source)[split]
    source, lo, hi = (src, 0, None) if isinstance(src, str) else src
    total = data.spec(task.dataset).counts.get(source)
    if total is None:
        return None
    return max(0, _bound(hi, total) - _bound(lo, total))


def _load(task: Task, split: str, source: str):
    if source == "hub":
        from . import hubdata
        return hubdata.load(task.hub, split, source="hub")
    return data.load(task.dataset, split)


def _records(task: Task, split: str, n: int | None, source: str = "local") -> list[dict]:
    src = _sources(task, source)[split]
    name, lo, hi = (src, 0, None) if isinstance(src, str) else src
    ds = _load(task, name, source)
    total = len(ds)
    perm = np.random.default_rng(SPLIT_SEED).permutation(total)
    idx = perm[_bound(lo, total):_bound(hi, total)]
    if n is not None:
        idx = idx[:n]
    return list(ds.select(idx.tolist()))


def _example(task: Task, rec: dict) -> dict:
    if task.kind == "generative":
        prompt, target = task.format(rec)
        return {"prompt": prompt, "target": target, "choices": [], "label": -1}
    prompt, label = task.format(rec)
    if task.choices_field:
        choices = [" " + c.strip() for c in rec[task.choices_field]]
    else:
        choices = list(task.verbalizers)
    if not 0 <= label < len(choices):
        raise TaskError(f"task {task.name!r}: label {label} outside its {len(choices)} choices")
    return {"prompt": prompt, "target": choices[label], "choices": choices, "label": label}


def splits(name, n_train: int | None = None, n_val: int | None = None,
           n_test: int | None = None, source: str = "local") -> dict[str, list[dict]]:
    """Train/validation/test examples of a task (the first n of each split; None: all), from
    ``source``: ``"local"`` (``../shared/data``) or ``"hub"`` (its hub set through ``hubdata``)."""
    task = get(name)
    _sources(task, source)  # an unknown source or a task without a hub set: error before loading
    out = {}
    for split, n in zip(SPLITS, (n_train, n_val, n_test)):
        if n is not None and n < 1:
            raise TaskError(f"task {task.name!r}: asked for {n} {split} examples; allowed: >= 1")
        recs = _records(task, split, n, source)
        out[split] = [_example(task, r) for r in recs]
        if not out[split]:
            raise TaskError(f"task {task.name!r} has no {split} examples")
    return out
