"""The generalist benchmarks through ``lm-evaluation-harness``: offline on the local data files
(smoke/cpu/gpu), or lm-eval's own task definitions on the hub (paper).

::

    from coft_utils.foundation import lmeval_tasks as lt
    r = lt.evaluate(model, tok, ["arc_easy", "piqa"], limit=100)        # local files, offline
    r["scores"]["arc_easy"]            # {'acc': .., 'acc_norm': .., 'acc_stderr': .., 'n': 100}
    r = lt.evaluate("allenai/OLMo-1B-hf", None, lt.PAPER_BENCHMARKS, local=False)  # lm-eval's own tasks (hub)
    lt.PAPER_BENCHMARKS       # the paper's list (SciQ included); lt.EXTRA_BENCHMARKS: this companion's extras
    lt.LOCAL_BENCHMARKS       # the ones with a local data file (SciQ has none: hub only)
    p = lt.evaluate_panel(model, tok, lambada_n=500, pairs_n=500)     # chapter 01's cpu-scale panel
    p["scores"]["lambada_openai"]      # {'ppl': .., 'loss_se': .., 'acc': .., 'acc_stderr': .., 'n': 500}
    p["scores"]["minimal_pairs"]       # {'acc': .., 'acc_stderr': .., 'n': 500}

The panel tasks (:data:`PANEL_TASKS`, :func:`evaluate_panel`): ``lambada_openai`` is lm-eval's
OWN task definition (``lm_eval/tasks/lambada/lambada_openai.yaml``: the context is the text
without its last word, the target ``" " + last word``; metrics ``perplexity`` of the target and
``acc`` = the target is the greedy continuation), with only its data source replaced by a JSONL
written from the local file ``lambada_openai`` (``{"text": context + " " + continuation}``, which
is the original passage: no continuation holds a space); ``lambada_n`` items (0: all 5,153),
the first ``lambada_n`` of a ``random.Random(lambada_seed)`` permutation (fixed: the same items
for every model). ``minimal_pairs`` is the versioned task of
:mod:`coft_utils.foundation.minimal_pairs` (task ``coft_minimal_pairs_v<N>``, a local
multiple-choice file). Both run in one ``simple_evaluate`` call; the standard errors come from
the per-item records (LAMBADA perplexity: ``loss_se`` is the s.e. of the mean target NLL, i.e. of
log perplexity).

Which benchmarks (source: the paper, Springer et al. 2025, arXiv 2503.19206): its Fig. 1 caption
reports "the average performance of five common LLM benchmarks" and names ARC-Easy,
ARC-Challenge, PIQA and HellaSwag; the fifth, SciQ, is the one issue 15 of this project records
from the paper's list (we could not retrieve the paper's Section 2 text here to quote it).
:data:`PAPER_BENCHMARKS` is these five; Winogrande, BoolQ, COPA and OpenBookQA are this
companion's extras (:data:`EXTRA_BENCHMARKS`), labelled as such wherever they are reported. The
smoke/cpu/gpu presets use the eight benchmarks with a local data file (:data:`LOCAL_BENCHMARKS`).

``local=False`` (paper): lm-eval's own task definitions (``lm_eval/tasks/<task>/*.yaml``: its
prompts, choices, ``process_docs``). Online, by task name (lm-eval loads its ``dataset_path`` from
the hub). Offline (``HF_HUB_OFFLINE=1``, e.g. a cluster node after the download, or the tests'
hub-layout cache) ``datasets.load_dataset(hub_id)`` cannot resolve a hub id from the cache, so
:func:`hub_tasks` builds each of lm-eval's tasks with only its data source replaced: the
evaluated split's own files of the same hub repository, found through
:func:`coft_utils.foundation.hubdata.files` (``dataset_path: parquet|json``, ``data_files``),
every other field as lm-eval defines it. (This reaches into lm-eval 0.4.13's task factory,
``TaskManager._factory._build_task``; pinned in ``pyproject.toml``.)

``local=True`` (smoke/cpu/gpu): for every benchmark a normalized JSONL file and a task YAML are
written at run time into ``data.cache_dir()/lmeval_tasks/`` (:func:`write_tasks`), pointing at
that file by absolute path (``dataset_path: json``, ``dataset_kwargs: {data_files: ...}``), and
loaded with ``lm_eval.tasks.TaskManager(include_path=..., include_defaults=False)``; the task of
benchmark ``b`` is called ``coft_b``. The source files are read through :func:`coft_utils.foundation.data.load`
(sha256-verified). Normalization, per benchmark (prompts follow lm-eval's own task configs):

* ``arc_easy``, ``arc_challenge``: ``"<query>\\nAnswer:"`` (the local query already starts with
  ``"Question: "``), choices as given;
* ``boolq``: the local query (passage + question) + ``"\\nAnswer:"`` unless it already ends so; choices no/yes;
* ``copa``, ``openbookqa``: the local query (a sentence to complete), choices as given;
* ``piqa``: ``"Question: <goal>\\nAnswer:"``, choices ``[sol1, sol2]``, gold from ``valid-labels.lst``;
* ``hellaswag``: the context and endings cleaned with lm-eval's ``hellaswag.utils.preprocess``;
* ``winogrande``: partial scoring as in lm-eval's ``winogrande`` task: the choices are the two
  contexts (sentence up to the blank, filled with each option), the scored continuation is the
  rest of the sentence, identical for both; ``doc_to_text`` is the gold index (an int field). Because the
  scored string is the same for both options, length normalization cannot change the argmax:
  we report ``acc_norm = acc`` for winogrande (lm-eval reports only ``acc``).

Every choice is scored as ``loglik(" " + choice | text)`` (lm-eval's ``target_delimiter``);
``acc`` is the argmax of the summed log-likelihoods, ``acc_norm`` of the log-likelihood divided
by the choice's length in characters. ``max_length`` (tokens) cuts long contexts from the left,
as lm-eval does; it is raised, where needed, so that the longest scored continuation fits (a
model evaluated beyond its pre-training context extrapolates its rotary positions). ``limit`` takes the first ``limit`` items of each
benchmark (lm-eval's ``limit``), the same items for every model. Standard errors are binomial,
``sqrt(p (1 - p) / n)``.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import re
from pathlib import Path

from . import data

__all__ = ["PANEL_TASKS", "evaluate_panel", "lambada_file", "lambada_task", "BENCHMARKS", "LOCAL_BENCHMARKS", "PAPER_BENCHMARKS", "EXTRA_BENCHMARKS", "HUB_ONLY", "HUB_TASKS",
           "N_CHOICES", "label", "normalized_docs", "hub_tasks", "write_tasks", "task_manager", "evaluate",
           "task_name"]

# the benchmarks with a local data file in ../shared/data (smoke/cpu/gpu)
LOCAL_BENCHMARKS = ("arc_easy", "arc_challenge", "piqa", "hellaswag", "winogrande", "boolq", "copa", "openbookqa")
# the paper's five (Fig. 1: "five common LLM benchmarks"; SciQ: see the module doc) and our extras
PAPER_BENCHMARKS = ("arc_easy", "arc_challenge", "piqa", "hellaswag", "sciq")
EXTRA_BENCHMARKS = ("winogrande", "boolq", "copa", "openbookqa")
BENCHMARKS = LOCAL_BENCHMARKS + ("sciq",)  # every benchmark this module knows
HUB_ONLY = tuple(b for b in BENCHMARKS if b not in LOCAL_BENCHMARKS)
# benchmark -> lm-eval's standard task (paper profile, data from the hub: lm_eval/tasks/<name>/*.yaml;
# sciq: allenai/sciq, 4 choices, acc and acc_norm)
HUB_TASKS = {b: b for b in BENCHMARKS}
# choices per item where every item has the same number (the chance level without the data)
N_CHOICES = {"piqa": 2, "hellaswag": 4, "winogrande": 2, "boolq": 2, "copa": 2, "openbookqa": 4, "sciq": 4}
_SPLIT = {"arc_easy": "test", "arc_challenge": "test", "piqa": "validation", "hellaswag": "validation",
          "winogrande": "validation", "boolq": "validation", "copa": "validation", "openbookqa": "test"}
TASK_VERSION = 1  # bump when the normalization changes (the cache folder is keyed by it)


def task_name(bench: str) -> str:
    return f"coft_{bench}"


def _hs_pre(text: str) -> str:  # lm_eval/tasks/hellaswag/utils.py: preprocess
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def label(bench: str) -> str:
    """``bench``, marked ``(extra)`` when it is not one of the paper's benchmarks."""
    return bench if bench in PAPER_BENCHMARKS else f"{bench} (extra)"


def normalized_docs(bench: str) -> list[dict]:
    """The benchmark's items as dicts: ``text``/``choices``/``gold`` (winogrande:
    ``options``/``continuation``/``gold``), in the data file's order."""
    if bench in HUB_ONLY:
        raise data.DataError(f"benchmark {bench!r} has no local data file (hub only: lm-eval's task "
                             f"{HUB_TASKS[bench]!r}); allowed locally: {', '.join(LOCAL_BENCHMARKS)}")
    if bench not in _SPLIT:
        raise data.DataError(f"unknown benchmark {bench!r}; allowed: {', '.join(BENCHMARKS)}")
    return [dict(d) for d in _docs(bench, str(data.data_dir()))]


@functools.lru_cache(maxsize=None)
def _docs(bench: str, _root: str) -> tuple:
    ds = data.load(bench, _SPLIT[bench])
    out = []
    for r in ds:
        if bench in ("arc_easy", "arc_challenge"):
            out.append({"text": r["query"].strip() + "\nAnswer:", "choices": list(r["choices"]), "gold": int(r["gold"])})
        elif bench == "boolq":
            q = r["query"].rstrip()
            out.append({"text": q if q.endswith("Answer:") else q + "\nAnswer:", "choices": list(r["choices"]),
                        "gold": int(r["gold"])})
        elif bench in ("copa", "openbookqa"):
            out.append({"text": r["query"].strip(), "choices": list(r["choices"]), "gold": int(r["gold"])})
        elif bench == "piqa":
            out.append({"text": f"Question: {r['goal'].strip()}\nAnswer:", "choices": [r["sol1"], r["sol2"]],
                        "gold": int(r["label"])})
        elif bench == "hellaswag":
            out.append({"text": _hs_pre(r["context"]), "choices": [_hs_pre(e) for e in r["endings"]],
                        "gold": int(r["label"])})
        elif bench == "winogrande":
            out.append({"options": [o.rstrip() for o in r["context_options"]],
                        "continuation": r["continuation"].strip(), "gold": int(r["gold"])})
    return tuple(out)


_METRICS = """metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def _yaml(bench: str, path: Path) -> str:
    head = (f"task: {task_name(bench)}\ndataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(path))}\n"
            "output_type: multiple_choice\ntest_split: test\n")
    if bench == "winogrande":  # partial scoring: doc_to_text renders the gold index
        body = ("doc_to_text: gold\ndoc_to_choice: options\ndoc_to_target: continuation\n"
                "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    else:
        body = "doc_to_text: text\ndoc_to_choice: choices\ndoc_to_target: gold\n" + _METRICS
    return head + body + f"metadata:\n  version: {TASK_VERSION}.0\n"


def write_tasks(benches=LOCAL_BENCHMARKS, root: str | os.PathLike | None = None) -> Path:
    """Write normalized JSONL files and task YAMLs for ``benches``; return the include folder."""
    root = Path(root) if root else data.cache_dir() / f"lmeval_tasks_v{TASK_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    for b in benches:
        src = data.file_path(data.spec(b).files()[0])
        stamp = f"{src.stat().st_size}-{src.stat().st_mtime_ns}"
        jl, ym = root / f"{b}.jsonl", root / f"{task_name(b)}.yaml"
        if not (jl.is_file() and (root / f"{b}.stamp").is_file() and (root / f"{b}.stamp").read_text() == stamp):
            tmp = jl.with_name(jl.name + f".tmp{os.getpid()}")
            with open(tmp, "w") as fh:
                for d in normalized_docs(b):
                    fh.write(json.dumps(d) + "\n")
            os.replace(tmp, jl)
            (root / f"{b}.stamp").write_text(stamp)
        ym.write_text(_yaml(b, jl.resolve()))
    return root


def task_manager(local: bool = True, benches=LOCAL_BENCHMARKS):
    from lm_eval.tasks import TaskManager
    if local:
        return TaskManager(include_path=str(write_tasks(benches)), include_defaults=False)
    return TaskManager()


# benchmark -> the folder of lm-eval 0.4.13's task YAML under lm_eval/tasks
_LMEVAL_DIRS = {"arc_easy": "arc", "arc_challenge": "arc", "piqa": "piqa", "hellaswag": "hellaswag",
                "sciq": "sciq", "winogrande": "winogrande", "boolq": "super_glue/boolq",
                "copa": "super_glue/copa", "openbookqa": "openbookqa"}


def hub_tasks(benches) -> tuple[list, object]:
    """(lm-eval ``Task`` objects, their ``TaskManager``): lm-eval's own definitions of ``benches``
    reading the evaluated split's hub files through :mod:`coft_utils.foundation.hubdata` (the hub
    cache offline). Only the lm-eval task folders of ``benches`` are indexed (seconds, not the ~20 s
    of lm-eval's whole index)."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager
    from . import hubdata
    root = Path(lm_eval.tasks.__file__).parent
    bad = [b for b in benches if b not in _LMEVAL_DIRS]
    if bad:
        raise ValueError(f"unknown benchmark(s) {bad}; allowed: {', '.join(_LMEVAL_DIRS)}")
    tm = TaskManager(include_path=sorted({str(root / _LMEVAL_DIRS[b]) for b in benches}), include_defaults=False)
    tasks = []
    for b in benches:
        if b not in hubdata.REGISTRY:
            raise hubdata.HubDataError(f"benchmark {b!r} has no hub data set registered in hubdata, so lm-eval's task "
                                       f"{HUB_TASKS[b]!r} cannot read the hub cache offline; run it online, or "
                                       f"without it: {', '.join(x for x in benches if x in hubdata.REGISTRY)}")
        entry = tm._entry(HUB_TASKS[b])
        cfg = entry.cfg
        split = cfg.get("test_split") or cfg.get("validation_split")  # what lm-eval evaluates
        paths = [str(p) for p in hubdata.files(b, split)]
        builder = "parquet" if paths[0].endswith(".parquet") else "json"
        over = {"dataset_path": builder, "dataset_name": None, "dataset_kwargs": {"data_files": {split: paths}},
                "training_split": None, "validation_split": split if split != cfg.get("test_split") else None,
                "test_split": split if split == cfg.get("test_split") else None, "fewshot_split": None}
        tasks.append(tm._factory._build_task(entry, over))
    return tasks, tm


@contextlib.contextmanager
def _fast():
    """Two pure overheads of lm-eval 0.4.13 removed for the duration of a call (the scores are
    unchanged): ``lm_eval.utils.apply_template`` compiles its jinja template again for every
    document (here: compiled once per template string, same environment), and ``simple_evaluate``
    collects the environment (``pip list`` in a subprocess, ~0.6 s a call) into a results field we
    never read."""
    import lm_eval.evaluator
    import lm_eval.utils
    orig_t, orig_env = lm_eval.utils.apply_template, lm_eval.evaluator.add_env_info
    compiled = functools.lru_cache(maxsize=256)(lm_eval.utils.env.from_string)

    def apply_template(template: str, doc: dict) -> str:
        return compiled(template).render(**doc)
    lm_eval.utils.apply_template = apply_template
    lm_eval.evaluator.add_env_info = lambda results: None
    try:
        yield
    finally:
        lm_eval.utils.apply_template, lm_eval.evaluator.add_env_info = orig_t, orig_env


def _lm(model, tokenizer, batch_size: int, max_length: int | None, device: str | None):
    from lm_eval.models.huggingface import HFLM
    kw = dict(batch_size=batch_size)
    if max_length:
        kw["max_length"] = max_length
    if isinstance(model, (str, os.PathLike)):
        return HFLM(pretrained=str(model), tokenizer=tokenizer, device=device or "cpu", **kw)
    return HFLM(pretrained=model, tokenizer=tokenizer, **kw)


def longest_continuation(tokenizer, benches=LOCAL_BENCHMARKS, limit: int | None = None) -> int:
    """Tokens of the longest scored continuation (``" " + choice``) among the first ``limit`` items."""
    n = 0
    for b in benches:
        docs = normalized_docs(b)
        for d in docs[:limit] if limit else docs:
            conts = [d["continuation"]] if "continuation" in d else d["choices"]
            n = max(n, max(len(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in conts))
    return n


def evaluate(model, tokenizer, benches=LOCAL_BENCHMARKS, limit: int | None = None, batch_size: int = 32,
             local: bool = True, log_samples: bool = False, max_length: int | None = None,
             device: str | None = None, progress: bool = False) -> dict:
    """Zero-shot ``acc``/``acc_norm`` of ``model`` (a loaded model + tokenizer, or a path / hub id)
    on ``benches`` through ``lm_eval.simple_evaluate``.

    Returns ``{"scores": {bench: {acc, acc_norm, acc_stderr, acc_norm_stderr, n}},
    "samples": {bench: [lm-eval's per-item records]} (when log_samples), "lm_eval": version}``.
    """
    import lm_eval
    benches = list(benches)
    bad = [b for b in benches if b not in BENCHMARKS]
    if bad:
        raise ValueError(f"unknown benchmark(s) {bad}; allowed: {', '.join(BENCHMARKS)}")
    hub_only = [b for b in benches if b in HUB_ONLY]
    if local and hub_only:
        raise ValueError(f"benchmark(s) {hub_only} have no local data file (hub only); use local=False "
                         f"(lm-eval's own tasks), or locally one of {', '.join(LOCAL_BENCHMARKS)}")
    names = {b: (task_name(b) if local else HUB_TASKS[b]) for b in benches}
    from . import hubdata
    if not local and hubdata.offline():  # lm-eval's own tasks on the hub cache's files
        tasks, tm = hub_tasks(benches)
    else:
        tm = task_manager(local, benches)
        tasks = list(names.values())
    if local and max_length and tokenizer is not None:
        # lm-eval asserts that every scored continuation fits into max_length
        max_length = max(max_length, longest_continuation(tokenizer, benches, limit) + 1)
    lm = _lm(model, tokenizer, batch_size, max_length, device)
    # lm-eval's progress bars go to stderr; keep them out of the book unless asked for
    with (contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())), _fast():
        res = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=tm,
                                      limit=limit or None, bootstrap_iters=0, log_samples=log_samples,
                                      random_seed=0, numpy_random_seed=0, torch_random_seed=0)
    scores = {}
    for b, t in names.items():
        r = res["results"][t]
        n = res.get("n-samples", {}).get(t, {}).get("effective")
        acc = float(r["acc,none"])
        norm = float(r.get("acc_norm,none", acc))  # winogrande: acc_norm = acc (see module doc)
        if n is None:
            n = len(res["samples"][t]) if log_samples else 0
        se = (lambda p: math.sqrt(p * (1 - p) / n) if n else float("nan"))
        scores[b] = {"acc": acc, "acc_norm": norm, "acc_stderr": se(acc), "acc_norm_stderr": se(norm), "n": int(n)}
    out = {"scores": scores, "lm_eval": getattr(lm_eval, "__version__", "?")}
    if log_samples:
        out["samples"] = {b: res["samples"][t] for b, t in names.items()}
    return out


# --------------------------------------------------------------------------- chapter 01's cpu-scale panel
PANEL_TASKS = ("lambada_openai", "minimal_pairs")


def lambada_file(n: int = 0, seed: int = 0, root: str | os.PathLike | None = None) -> Path:
    """A JSONL of LAMBADA passages ``{"text": ...}`` from the local file: all (``n = 0``, file order)
    or the first ``n`` of a ``random.Random(seed)`` permutation; cached, sha256-verified source."""
    import random
    root = Path(root) if root else data.cache_dir() / f"lmeval_tasks_v{TASK_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    path = root / (f"lambada_openai-n{n}-seed{seed}.jsonl" if n else "lambada_openai-all.jsonl")
    if not path.is_file():
        rows = [{"text": r["context"] + " " + r["continuation"]} for r in data.load("lambada_openai", "test")]
        if n:
            idx = list(range(len(rows)))
            random.Random(seed).shuffle(idx)
            rows = [rows[i] for i in idx[:n]]
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        with open(tmp, "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
        os.replace(tmp, path)
    return path


def lambada_task(path: str | os.PathLike):
    """lm-eval's own ``lambada_openai`` task (``Task`` object) reading ``path`` (a JSONL of ``text``)."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager
    tm = TaskManager(include_path=str(Path(lm_eval.tasks.__file__).parent / "lambada"), include_defaults=False)
    entry = tm._entry("lambada_openai")
    over = {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": {"test": str(path)}},
            "test_split": "test"}
    return tm._factory._build_task(entry, over), tm


def _pairs_yaml(path: Path) -> str:
    from . import minimal_pairs
    return (f"task: {minimal_pairs.TASK}\ndataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(path))}\n"
            "output_type: multiple_choice\ntest_split: test\n"
            "doc_to_text: text\ndoc_to_choice: choices\ndoc_to_target: gold\n" + _METRICS
            + f"metadata:\n  version: {minimal_pairs.VERSION}.0\n")


def evaluate_panel(model, tokenizer, tasks=PANEL_TASKS, lambada_n: int = 500, lambada_seed: int = 0,
                   pairs_n: int = 500, pairs_seed: int = 0, batch_size: int = 32, max_length: int | None = None,
                   device: str | None = None, log_samples: bool = False) -> dict:
    """The panel's lm-eval tasks in one ``simple_evaluate`` call (see the module doc).

    Returns ``{"scores": {"lambada_openai": {ppl, loss, loss_se, acc, acc_stderr, n},
    "minimal_pairs": {acc, acc_norm, acc_stderr, n}}, "lm_eval": version}`` (and ``"samples"``)."""
    import lm_eval
    from . import minimal_pairs
    tasks = list(tasks)
    bad = [t for t in tasks if t not in PANEL_TASKS]
    if bad:
        raise ValueError(f"unknown panel task(s) {bad}; allowed: {', '.join(PANEL_TASKS)}")
    objs, names, tm = [], {}, None
    if "minimal_pairs" in tasks:
        src = minimal_pairs.write(pairs_n, pairs_seed)
        root = src.parent / "lmeval"
        root.mkdir(exist_ok=True)
        (root / f"{minimal_pairs.TASK}.yaml").write_text(_pairs_yaml(src.resolve()))
        from lm_eval.tasks import TaskManager
        tm = TaskManager(include_path=str(root), include_defaults=False)
        objs.append(minimal_pairs.TASK)
        names["minimal_pairs"] = minimal_pairs.TASK
    if "lambada_openai" in tasks:
        task, tm2 = lambada_task(lambada_file(lambada_n, lambada_seed))
        objs.append(task)
        names["lambada_openai"] = "lambada_openai"
        tm = tm or tm2
    lm = _lm(model, tokenizer, batch_size, max_length, device)
    with contextlib.redirect_stderr(io.StringIO()), _fast():
        res = lm_eval.simple_evaluate(model=lm, tasks=objs, task_manager=tm, limit=None, bootstrap_iters=0,
                                      log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0)
    scores = {}
    for k, t in names.items():
        r, smp = res["results"][t], res["samples"][t]
        n = len(smp)
        if k == "lambada_openai":
            ll = [float(s["filtered_resps"][0][0]) for s in smp]
            loss = -sum(ll) / n
            var = sum((-x - loss) ** 2 for x in ll) / (n - 1) if n > 1 else float("nan")
            ppl = float(r["perplexity,none"])
            acc = float(r["acc,none"])
            scores[k] = {"ppl": ppl, "loss": loss, "loss_se": math.sqrt(var / n) if n > 1 else float("nan"),
                         "acc": acc, "acc_stderr": math.sqrt(acc * (1 - acc) / n), "n": n}
        else:
            acc = float(r["acc,none"])
            scores[k] = {"acc": acc, "acc_norm": float(r.get("acc_norm,none", acc)),
                         "acc_stderr": math.sqrt(acc * (1 - acc) / n), "n": n}
    out = {"scores": scores, "lm_eval": getattr(lm_eval, "__version__", "?")}
    if log_samples:
        out["samples"] = {k: res["samples"][t] for k, t in names.items()}
    return out
