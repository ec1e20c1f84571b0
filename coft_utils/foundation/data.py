"""Registry and loaders of the real data sets in ``../shared/data`` (checksummed, offline).

Every set is a :class:`DataSpec`: its folder, files per split, record schema, expected example
counts, and the public hub name used at paper scale. Loading goes through Hugging Face
``datasets`` (``load_dataset("json" | "csv" | "text", data_files=...)``) after the files'
sha256 sums have been checked against ``SHA256SUMS`` (the check is cached per file, keyed by
size, modification time, inode and status-change time, after its first success)::

    from coft_utils.foundation import data
    data.names()                                  # every registered set
    ds = data.load("sst2_glue", "train")          # datasets.Dataset: sentence -> text, label
    dd = data.load("mr")                          # DatasetDict of every split
    data.spec("gsm8k").hub                        # 'openai/gsm8k' (paper scale: hubdata.load)
    books = data.gutenberg_bodies("validation")   # book bodies, PG boilerplate removed
    data.checksums(["mr", "gsm8k"])               # {file: measured sha256} for result provenance
    data.verify_all()                             # re-hash every file of every set (no cache)

The folder is ``$COFT_DATA_DIR`` or ``../shared/data`` beside the repository root. A missing
or corrupted file raises :class:`DataError` naming the file, where it looked, and how to fix it.

The checksum machinery (``verify_files``, ``verify``, ``verify_all``, ``checksums``,
``file_path`` and the verified cache) lives in :mod:`coft_utils.foundation.checksums`; those
names are re-exported here, so ``data.verify(...)`` etc. work as before.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = ["DataError", "DataSpec", "REGISTRY", "names", "spec", "data_dir", "load", "verify",
           "verify_all", "checksums", "gutenberg_bodies", "file_path", "verify_files"]


class DataError(FileNotFoundError):
    """A data set that is missing, corrupted, unknown, or not available offline."""


def data_dir() -> Path:
    env = os.environ.get("COFT_DATA_DIR")
    return Path(env).expanduser().resolve() if env else (REPO_ROOT.parent / "shared" / "data").resolve()


def cache_dir() -> Path:
    env = os.environ.get("COFT_CACHE_DIR")
    d = Path(env).expanduser() if env else REPO_ROOT / ".cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


# --------------------------------------------------------------------------- record parsers
# Each parser maps one raw record (as datasets yields it) to the registered schema.

def _label_prefixed(rec):  # "<label> <text>" (SST sentence level)
    lab, _, text = rec["text"].partition(" ")
    return {"text": text, "label": int(lab)}


TREC_CLASSES = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")


def _trec(rec):  # "COARSE:fine question ?"
    head, _, text = rec["text"].partition(" ")
    coarse, _, fine = head.partition(":")
    return {"text": text, "label": TREC_CLASSES.index(coarse), "fine_label": fine}


def _glue_sst2(rec):
    return {"text": rec["sentence"].strip(), "label": int(rec["label"])}


RTE_CLASSES = ("entailment", "not_entailment")


def _glue_rte(rec):
    lab = rec.get("label")
    return {"premise": rec["sentence1"], "hypothesis": rec["sentence2"],
            "label": RTE_CLASSES.index(lab) if lab is not None else -1}


_PRODUCED_BY = re.compile(r"\A\s*(?:(?:produced|prepared|transcribed|e-?text prepared) by|this (?:e-?text|ebook) was)"
                          r"[^\n]*(?:\n(?!\s*\n)[^\n]*)*\s*", re.I)
_END_OF = re.compile(r"\n[^\n]*end of (?:the |this )?project gutenberg[\s\S]*\Z", re.I)


def _gutenberg_body(rec):
    """``text[pg_body_span]`` minus the producer-credit paragraph and the "End of the Project
    Gutenberg EBook" line that some books keep inside the markers."""
    start, end = rec["pg_body_span"]
    body = rec["text"][start:end]
    body = _PRODUCED_BY.sub("", body, count=1)
    tail = len(body) - 3000
    m = _END_OF.search(body, max(tail, 0))
    if m:
        body = body[:m.start()]
    return {"text": body.strip("\n") + "\n"}


PARSERS: dict[str, Callable] = {
    "label_prefixed": _label_prefixed, "trec": _trec, "glue_sst2": _glue_sst2,
    "glue_rte": _glue_rte, "gutenberg_body": _gutenberg_body,
}


# --------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class DataSpec:
    """One data set. ``splits`` maps split -> file, or split -> {label name: file} for sets
    stored one class per file; ``labels`` maps split -> a file with one label per line."""

    name: str
    role: str
    builder: str  # "json" | "csv" | "text" ("parquet": a hub-only set's files, read by hubdata)
    splits: dict
    counts: dict  # split -> expected number of examples after parsing
    schema: dict  # field -> type name, after parsing
    hub: str  # public hub id for online use at paper scale
    hub_config: str | None = None
    builder_kwargs: dict = field(default_factory=dict)
    parse: str | None = None
    labels: dict = field(default_factory=dict)
    label_names: tuple = ()
    note: str = ""
    local: bool = True

    def files(self) -> list[str]:
        out = []
        for v in self.splits.values():
            out.extend(v.values() if isinstance(v, dict) else [v])
        out.extend(self.labels.values())
        return [f"{self.name}/{f}" for f in out]


_TSV = {"sep": "\t", "quoting": 3, "keep_default_na": False}  # quoting=3: csv.QUOTE_NONE
_MC = {"query": "str", "choices": "list[str]", "gold": "int"}
_CLS = {"text": "str", "label": "int"}
_L1 = {"encoding": "latin-1"}

_SPECS = [
    DataSpec("gutenberg_top100_authors", "pre-training corpus (book bodies only)", "json",
             {"train": "train.jsonl.gz", "validation": "validation.jsonl.gz"},
             {"train": 672, "validation": 13}, {"text": "str"}, "allenai/c4", "en",
             parse="gutenberg_body",
             note="Only books whose PG markers were found (pg_body_span not null): 17 train books "
                  "without markers are dropped so boilerplate never enters training. At paper "
                  "scale the pre-training corpus is C4 (allenai/c4, en)."),
    DataSpec("wikitext2_tokenized_valid_test", "out-of-domain held-out text", "text",
             {"validation": "valid.txt", "test": "test.txt"}, {"validation": 3760, "test": 4358},
             {"text": "str"}, "Salesforce/wikitext", "wikitext-2-v1",
             builder_kwargs={"keep_linebreaks": True},
             note="Tokenized (<unk>) WikiText-2, one line per record, line breaks kept."),
    DataSpec("sst2_glue", "classification (sentiment, 2 classes)", "csv",
             {"train": "train.tsv", "validation": "dev.tsv", "test": "test-labeled.tsv"},
             {"train": 67349, "validation": 872, "test": 1821}, _CLS, "stanfordnlp/sst2",
             builder_kwargs=_TSV, parse="glue_sst2", label_names=("negative", "positive")),
    DataSpec("sst_sentence_level", "classification (sentiment, SST-2 sentence level)", "text",
             {"train": "stsa.binary.train", "validation": "stsa.binary.dev", "test": "stsa.binary.test"},
             {"train": 6920, "validation": 872, "test": 1821}, _CLS, "SetFit/sst2",
             parse="label_prefixed", label_names=("negative", "positive"),
             note="The SST-5 files (stsa.fine.*) are in the same folder and not registered."),
    DataSpec("mr", "classification (movie-review polarity)", "text",
             {"all": {"negative": "rt-polarity.neg", "positive": "rt-polarity.pos"}}, {"all": 10662},
             _CLS, "cornell-movie-review-data/rotten_tomatoes", builder_kwargs=_L1,
             label_names=("negative", "positive"), note="No official split (cross-validation)."),
    DataSpec("cr", "classification (customer-review polarity)", "text",
             {"all": {"negative": "custrev.neg", "positive": "custrev.pos"}}, {"all": 3775}, _CLS,
             "SetFit/CR", label_names=("negative", "positive"), note="No official split."),
    DataSpec("subj", "classification (subjectivity)", "text",
             {"all": {"objective": "subj.objective", "subjective": "subj.subjective"}}, {"all": 10000},
             _CLS, "SetFit/subj", builder_kwargs=_L1, label_names=("objective", "subjective"),
             note="No official split."),
    DataSpec("mpqa", "classification (opinion polarity)", "text",
             {"all": {"negative": "mpqa.neg", "positive": "mpqa.pos"}}, {"all": 10606}, _CLS,
             "jxm/mpqa", label_names=("negative", "positive"), note="No official split."),
    DataSpec("trec", "classification (question type, 6 classes)", "text",
             {"train": "TREC.train", "test": "TREC.test"}, {"train": 5452, "test": 500},
             {"text": "str", "label": "int", "fine_label": "str"}, "CogComp/trec",
             builder_kwargs=_L1, parse="trec", label_names=TREC_CLASSES),
    DataSpec("rte_glue", "classification (entailment, 2 classes)", "csv",
             {"train": "train.tsv", "validation": "dev.tsv"}, {"train": 2490, "validation": 277},
             {"premise": "str", "hypothesis": "str", "label": "int"}, "nyu-mll/glue", "rte",
             builder_kwargs=_TSV, parse="glue_rte", label_names=RTE_CLASSES,
             note="test.tsv (3,000, unlabeled) is not registered."),
    DataSpec("tweeteval_sentiment", "classification (tweet sentiment, 3 classes)", "text",
             {"validation": "val_text.txt", "test": "test_text.txt"},
             {"validation": 2000, "test": 12284}, _CLS, "cardiffnlp/tweet_eval", "sentiment",
             labels={"validation": "val_labels.txt", "test": "test_labels.txt"},
             label_names=("negative", "neutral", "positive"),
             note="No train split here: fine-tuning cuts a documented split of test."),
    DataSpec("hh_rlhf", "instruction tuning (preference pairs; chosen responses)", "json",
             {"test": "harmless-base/test.jsonl.gz"}, {"test": 2312},
             {"chosen": "str", "rejected": "str"}, "Anthropic/hh-rlhf",
             note="Only the harmless-base test split is here."),
    DataSpec("alpaca_seed_tasks", "instruction tuning (175 seed tasks)", "json",
             {"train": "seed_tasks.jsonl"}, {"train": 175},
             {"id": "str", "name": "str", "instruction": "str", "instances": "list[dict]",
              "is_classification": "bool"}, "tatsu-lab/alpaca",
             note="Not Alpaca-52K (that is tatsu-lab/alpaca on the hub)."),
    DataSpec("gsm8k", "generative fine-tuning (math word problems)", "json",
             {"train": "train.jsonl", "test": "test.jsonl"}, {"train": 7473, "test": 1319},
             {"question": "str", "answer": "str"}, "openai/gsm8k", "main"),
    DataSpec("humaneval", "generative fine-tuning (Python code)", "json",
             {"test": "HumanEval.jsonl.gz"}, {"test": 164},
             {"task_id": "str", "prompt": "str", "entry_point": "str", "canonical_solution": "str",
              "test": "str"}, "openai/openai_humaneval", note="Data only; never executed here."),
    DataSpec("piqa", "multiple choice (physical commonsense)", "json",
             {"validation": "valid.jsonl"}, {"validation": 1838},
             {"goal": "str", "sol1": "str", "sol2": "str", "label": "int"}, "ybisk/piqa",
             labels={"validation": "valid-labels.lst"},
             note="tests.jsonl (3,084, unlabeled) is not registered; no train split."),
    DataSpec("hellaswag", "multiple choice (commonsense completion)", "json",
             {"validation": "hellaswag_val.jsonl.gz"}, {"validation": 10042},
             {"ind": "int", "context": "str", "label": "int", "endings": "list[str]"}, "Rowan/hellaswag"),
    DataSpec("arc_easy", "multiple choice (science)", "json", {"test": "arc_easy.jsonl"},
             {"test": 2376}, _MC, "allenai/ai2_arc", "ARC-Easy"),
    DataSpec("arc_challenge", "multiple choice (science, hard)", "json",
             {"test": "arc_challenge.jsonl"}, {"test": 1172}, _MC, "allenai/ai2_arc", "ARC-Challenge"),
    DataSpec("boolq", "multiple choice (yes/no reading comprehension)", "json",
             {"validation": "boolq.jsonl"}, {"validation": 3270}, _MC, "google/boolq"),
    DataSpec("copa", "multiple choice (causal reasoning)", "json", {"validation": "copa.jsonl"},
             {"validation": 100}, _MC, "aps/super_glue", "copa"),
    DataSpec("openbookqa", "multiple choice (science)", "json", {"test": "openbook_qa.jsonl"},
             {"test": 500}, _MC, "allenai/openbookqa", "main"),
    DataSpec("commonsense_qa", "multiple choice (lettered)", "json",
             {"validation": "commonsense_qa.jsonl"}, {"validation": 1221}, _MC, "tau/commonsense_qa"),
    DataSpec("winogrande", "multiple choice (partial-context schema)", "json",
             {"validation": "winogrande.jsonl"}, {"validation": 1267},
             {"context_options": "list[str]", "continuation": "str", "gold": "int"},
             "allenai/winogrande", "winogrande_xl"),
    DataSpec("siqa_llmfoundry_2choice", "multiple choice (SIQA degraded to 2 options)", "json",
             {"validation": "siqa.jsonl"}, {"validation": 1954}, _MC, "allenai/social_i_qa",
             note="Only 2 of the 3 SIQA options: not comparable with 3-way SIQA."),
    DataSpec("lambada_openai", "cloze (last word)", "json", {"test": "lambada_openai.jsonl"},
             {"test": 5153}, {"context": "str", "continuation": "str"}, "EleutherAI/lambada_openai"),
    # hub-only sets used at paper scale
    DataSpec("c4", "pre-training corpus at paper scale", "json", {}, {}, {"text": "str"},
             "allenai/c4", "en", local=False,
             note="Hub only: hubdata.iter_texts('c4', split, max_files=k) reads its json.gz shards."),
    DataSpec("tulu", "instruction tuning at paper scale", "parquet", {}, {},
             {"dataset": "str", "id": "str", "messages": "list[dict]"},
             "allenai/tulu-v2-sft-mixture", local=False, note="Hub only: hubdata.load('tulu', 'train')."),
]
REGISTRY: dict[str, DataSpec] = {s.name: s for s in _SPECS}


def names(local_only: bool = True) -> list[str]:
    return [n for n, s in REGISTRY.items() if s.local or not local_only]


def spec(name: str) -> DataSpec:
    if name not in REGISTRY:
        raise DataError(f"unknown data set {name!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name]


# --------------------------------------------------------------------------- loading
def _load_files(s: DataSpec, files, streaming=False):
    import datasets
    if s.builder == "json" and any(str(f).endswith(".gz") for f in files):
        pass  # datasets decompresses .gz transparently
    return datasets.load_dataset(s.builder, data_files={"x": [str(f) for f in files]}, split="x",
                                 streaming=streaming, **s.builder_kwargs)


def _load_split(s: DataSpec, split: str, paths: dict[str, Path]):
    import datasets
    entry = s.splits[split]
    if isinstance(entry, dict):  # one file per class
        parts = []
        for label, f in entry.items():
            d = _load_files(s, [paths[f"{s.name}/{f}"]])
            lab = s.label_names.index(label)
            d = d.map(lambda r: {"text": r["text"].strip(), "label": lab})
            parts.append(d)
        ds = datasets.concatenate_datasets(parts)
    else:
        ds = _load_files(s, [paths[f"{s.name}/{entry}"]])
    if split in s.labels:
        lab_path = paths[f"{s.name}/{s.labels[split]}"]
        labels = [int(x) for x in lab_path.read_text().split()]
        if len(labels) != len(ds):
            raise DataError(f"{lab_path} has {len(labels)} labels for {len(ds)} records of "
                            f"{s.name}/{split}")
        if "label" in ds.column_names:
            ds = ds.remove_columns("label")
        ds = ds.add_column("label", labels)
        if s.builder == "text":
            ds = ds.map(lambda r: {"text": r["text"].strip()})
    if s.name == "gutenberg_top100_authors":
        ds = ds.filter(lambda r: r["pg_body_span"] is not None)
    if s.parse:
        fn = PARSERS[s.parse]
        # parsers return the whole schema; explicit features, since datasets would otherwise keep
        # the type of a removed column that comes back under the same name (RTE's string label)
        feats = datasets.Features({k: datasets.Value({"str": "string", "int": "int64"}[t])
                                   for k, t in s.schema.items()})
        ds = ds.map(fn, remove_columns=ds.column_names, features=feats)
    return ds


def load(name: str, split: str | None = None):
    """Load a registered set (verified) as a ``datasets.Dataset`` (one split) or ``DatasetDict``."""
    import datasets
    s = spec(name)
    if not s.local:
        raise DataError(f"data set {name!r} is hub-only ({s.hub}{', ' + s.hub_config if s.hub_config else ''}): "
                        f"read it with coft_utils.foundation.hubdata.load({name!r}, split) at the paper "
                        f"profile (or gpu where its chapter allows the hub)")
    if split is not None and split not in s.splits:
        raise DataError(f"data set {name!r} has no split {split!r}; allowed: {', '.join(s.splits)}")
    paths = verify(name)
    if split is not None:
        return _load_split(s, split, paths)
    return datasets.DatasetDict({sp: _load_split(s, sp, paths) for sp in s.splits})


def gutenberg_bodies(split: str = "train", max_books: int | None = None,
                     max_chars: int | None = None) -> Iterator[str]:
    """Book bodies (``text[pg_body_span]``) in the corpus's deterministic order, streamed.

    Books without PG markers are skipped, so Project Gutenberg boilerplate never enters
    training or evaluation. Stops after ``max_books`` books or ``max_chars`` characters.
    """
    s = spec("gutenberg_top100_authors")
    if split not in s.splits:
        raise DataError(f"gutenberg has no split {split!r}; allowed: {', '.join(s.splits)}")
    paths = verify(s.name)
    stream = _load_files(s, [paths[f"{s.name}/{s.splits[split]}"]], streaming=True)
    n = chars = 0
    for rec in stream:
        if rec["pg_body_span"] is None:
            continue
        body = _gutenberg_body(rec)["text"]
        yield body
        n += 1
        chars += len(body)
        if (max_books is not None and n >= max_books) or (max_chars is not None and chars >= max_chars):
            return


# the checksum machinery (see the module docstring); imported at the end, since checksums reads
# this module's registry and folders (either module can be imported first)
from .checksums import checksums, file_path, verify, verify_all, verify_files  # noqa: E402
