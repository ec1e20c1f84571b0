"""The one way a chapter reads a data set from the Hugging Face hub (gpu and paper profiles).

Every hub set is a :class:`HubSet`: its hub id, revision, the repository's OWN data files per
split (never the ``refs/convert/parquet`` conversions), the builder that reads them and a parse
function to the schema that :func:`coft_utils.foundation.data.load` gives for the local copy::

    from coft_utils.foundation import hubdata
    hubdata.source_for("paper")                   # "hub" (smoke, cpu, gpu: "local")
    ds = hubdata.load("gsm8k", "train")           # datasets.Dataset, same schema as data.load
    ds = hubdata.load("sst2_glue", "validation", source="local")   # = data.load(...)
    for text in hubdata.iter_texts("c4", "train", max_files=2): ...  # C4 shards, file by file
    hubdata.files("gsm8k", "test")                # [Path] in the hub cache after download
    hubdata.register(hubdata.HubSet(name="mine", hub_id="me/set", splits={"train": ("*.jsonl",)},
                                    builder="json"))
    hubdata.provenance("gsm8k")                   # {"hub_id", "revision", "commit", "files"}

Files are fetched with ``huggingface_hub.snapshot_download(repo_id, repo_type="dataset",
revision=..., allow_patterns=[...])`` (or ``hf_hub_download`` per shard of a sharded set such
as C4) and read with ``datasets.load_dataset(<json|parquet|csv|text>, data_files=...)``, not
``load_dataset(hub_id)``, which cannot resolve a hub id from the hub cache offline. So the same
code runs online on a cluster and offline (``HF_HUB_OFFLINE=1``) against a cache that already
holds the files (``$HF_HUB_CACHE``; ``tests/hubcache.py`` builds one for the tests). Offline, a
file that is not in the cache is a :class:`HubDataError` naming the hub id, revision, pattern and
cache folder, and how to fetch it.

Revisions are ``main`` unless a set pins a commit: :func:`provenance` records the 40-hex commit
that ``main`` resolved to, so every result names exactly the data it read.
"""
from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import data

__all__ = ["HubDataError", "HubSet", "REGISTRY", "register", "names", "get", "source_for", "files",
           "load", "iter_texts", "provenance", "cache_dir", "offline", "SOURCES"]

SOURCES = ("local", "hub")
_HEX40 = re.compile(r"[0-9a-f]{40}")


class HubDataError(data.DataError):
    """A hub data set, split or file that is unknown or cannot be had (offline, not in the cache)."""


@dataclass(frozen=True)
class HubSet:
    """One data set on the hub, read from the repository's own files.

    ``splits`` maps split -> file patterns (``fnmatch``: ``*`` matches across ``/``) relative to
    the repository root; ``shards`` maps split -> (``%``-template, count) for sets too big to
    fetch whole (C4): :func:`files` and :func:`iter_texts` then fetch the first ``max_files``.
    ``parse`` maps one raw record to the registered ``schema`` (field -> "str" | "int" | ...);
    ``local`` names the :mod:`data` set with the same schema (``source="local"`` reads it).
    ``lm_eval`` names the lm-evaluation-harness task that reads this set through its own task
    definition at gpu/paper (it is registered here for provenance and pre-fetching)."""

    name: str
    hub_id: str
    splits: dict = field(default_factory=dict)
    builder: str = "parquet"  # "json" | "parquet" | "csv" | "text"
    revision: str = "main"
    config: str | None = None  # the hub config / subfolder the files lie in (documentation)
    shards: dict = field(default_factory=dict)
    parse: Callable | None = None
    schema: dict = field(default_factory=dict)
    local: str | None = None
    local_split: dict = field(default_factory=dict)  # hub split -> local split, where they differ
    builder_kwargs: dict = field(default_factory=dict)
    lm_eval: str | None = None
    note: str = ""

    def __post_init__(self):
        if self.builder not in ("json", "parquet", "csv", "text"):
            raise HubDataError(f"HubSet {self.name!r}: builder {self.builder!r} is not allowed; "
                               f"allowed: json, parquet, csv, text")
        if "/" not in self.hub_id:
            raise HubDataError(f"HubSet {self.name!r}: hub_id {self.hub_id!r} is not 'owner/name'")
        both = set(self.splits) & set(self.shards)
        if both:
            raise HubDataError(f"HubSet {self.name!r}: split(s) {sorted(both)} are in both splits and shards")
        for sp, (tmpl, n) in self.shards.items():
            if not isinstance(n, int) or n < 1 or "%" not in tmpl:
                raise HubDataError(f"HubSet {self.name!r}: shards[{sp!r}] = ({tmpl!r}, {n!r}) must be "
                                   f"(a %-template such as 'en/c4-train.%05d-of-01024.json.gz', a count >= 1)")

    def all_splits(self) -> list[str]:
        return [*self.splits, *self.shards]


# --------------------------------------------------------------------------- parsers to the local schema
def _c4(rec):  # {"text", "timestamp", "url"} (allenai/c4 en json.gz lines)
    return {"text": rec["text"]}


def _wikitext(rec):
    """{"text"}: one line of the original file per row with its "\n"; the hub's rows for blank
    lines are "" where the file (and the local copy) has " \n" (the builder the hub's files were
    made with, huggingface/datasets ``datasets/wikitext/wikitext.py`` ``_generate_examples``,
    yields "" for every line that strips to nothing): restored, so hub text = local text (every
    blank line of the local wikitext-2 valid/test files is " \n"; tests/test_hubdata.py)."""
    t = rec["text"]
    return {"text": t if t.strip() else " \n"}


def _sst2(rec):  # stanfordnlp/sst2: {"idx", "sentence", "label"}; test labels are -1 (hidden)
    return {"text": rec["sentence"].strip(), "label": int(rec["label"])}


def _gsm8k(rec):
    return {"question": rec["question"], "answer": rec["answer"]}


def _humaneval(rec):
    return {k: rec[k] for k in ("task_id", "prompt", "entry_point", "canonical_solution", "test")}


def _hh(rec):
    return {"chosen": rec["chosen"], "rejected": rec["rejected"]}


def _tulu(rec):  # {"dataset", "id", "messages": [{"role", "content"}]}
    return {"dataset": rec["dataset"], "id": rec["id"],
            "messages": [{"role": m["role"], "content": m["content"]} for m in rec["messages"]]}


_CLS = {"text": "str", "label": "int"}
_HH_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")

_SETS = [
    HubSet("c4", "allenai/c4", builder="json", config="en",
           shards={"train": ("en/c4-train.%05d-of-01024.json.gz", 1024),
                   "validation": ("en/c4-validation.%05d-of-00008.json.gz", 8)},
           parse=_c4, schema={"text": "str"},
           note="The paper's pre-training corpus (C4 en, arXiv 2503.19206 §3). Layout from the allenai/c4 "
                "dataset card: en/c4-{train,validation}.NNNNN-of-{01024,00008}.json.gz, one JSON object "
                "per line (text, timestamp, url). Fetched shard by shard, never whole."),
    HubSet("wikitext", "Salesforce/wikitext", config="wikitext-2-v1",
           splits={s: (f"wikitext-2-v1/{s}-00000-of-00001.parquet",) for s in ("train", "validation", "test")},
           parse=_wikitext, schema={"text": "str"}, local="wikitext2_tokenized_valid_test",
           note="Tokenized WikiText-2 (<unk>), as the local wikitext2_tokenized_valid_test and "
                "evaluate.py's 'wikitext' source. The repository's own parquet files, one line per "
                "row (Salesforce/wikitext tree main: wikitext-2-v1/, wikitext-2-raw-v1/, ...). Rows "
                "keep their trailing newline; blank lines ('' on the hub) are restored to the file's ' \\n'."),
    HubSet("wikitext_raw", "Salesforce/wikitext", config="wikitext-2-raw-v1",
           splits={s: (f"wikitext-2-raw-v1/{s}-00000-of-00001.parquet",) for s in ("train", "validation", "test")},
           parse=_wikitext, schema={"text": "str"},
           note="Raw (untokenized) WikiText-2; same layout as 'wikitext'."),
    HubSet("sst2", "stanfordnlp/sst2",
           splits={s: (f"data/{s}-00000-of-00001.parquet",) for s in ("train", "validation", "test")},
           parse=_sst2, schema=_CLS, local="sst2_glue",
           note="GLUE SST-2 (67,349 / 872 / 1,821), stanfordnlp/sst2 tree main data/*.parquet (columns "
                "idx, sentence, label). The hub's test labels are -1 (hidden): use validation for "
                "evaluation; the local sst2_glue test-labeled.tsv has no hub counterpart."),
    HubSet("gsm8k", "openai/gsm8k", config="main",
           splits={s: (f"main/{s}-00000-of-00001.parquet",) for s in ("train", "test")},
           parse=_gsm8k, schema={"question": "str", "answer": "str"}, local="gsm8k",
           note="Config 'main' (7,473 / 1,319): main/{train,test}-00000-of-00001.parquet (the resolve/main "
                "URLs that public download scripts use; main/ and socratic/ are the repository's folders)."),
    HubSet("humaneval", "openai/openai_humaneval", config="openai_humaneval",
           splits={"test": ("openai_humaneval/test-00000-of-00001.parquet",)},
           parse=_humaneval, local="humaneval",
           schema={"task_id": "str", "prompt": "str", "entry_point": "str", "canonical_solution": "str",
                   "test": "str"},
           note="164 problems, one 'test' split (openai_humaneval/test-00000-of-00001.parquet). Data only; "
                "never executed here."),
    HubSet("hh_rlhf", "Anthropic/hh-rlhf", builder="json",
           splits={"train": tuple(f"{s}/train.jsonl.gz" for s in _HH_SUBSETS),
                   "test": tuple(f"{s}/test.jsonl.gz" for s in _HH_SUBSETS)},
           parse=_hh, schema={"chosen": "str", "rejected": "str"}, local="hh_rlhf",
           note="The four preference subsets' train/test files (Anthropic/hh-rlhf: harmless-base, "
                "helpful-base, helpful-online, helpful-rejection-sampled; {train,test}.jsonl.gz each). "
                "red-team-attempts has another schema and is not read. Locally only harmless-base/test."),
    HubSet("tulu", "allenai/tulu-v2-sft-mixture",
           splits={"train": ("data/train-*-of-00003-*.parquet",)},
           parse=_tulu, schema={"dataset": "str", "id": "str", "messages": "list[dict]"},
           note="Three parquet shards data/train-0000{0,1,2}-of-00003-<hash>.parquet (tree main); "
                "columns dataset, id, messages [{role, content}]. Hub only."),
    # the benchmark sets lm-eval reads at gpu/paper through its own task YAMLs (dataset_path /
    # dataset_name as in lm-eval 0.4.13's lm_eval/tasks); raw records, no local-schema parse
    HubSet("arc_easy", "allenai/ai2_arc", config="ARC-Easy", lm_eval="arc_easy",
           splits={s: (f"ARC-Easy/{s}-00000-of-00001.parquet",) for s in ("train", "validation", "test")},
           note="lm-eval arc_easy: dataset_path allenai/ai2_arc, dataset_name ARC-Easy."),
    HubSet("arc_challenge", "allenai/ai2_arc", config="ARC-Challenge", lm_eval="arc_challenge",
           splits={s: (f"ARC-Challenge/{s}-00000-of-00001.parquet",) for s in ("train", "validation", "test")},
           note="lm-eval arc_challenge: dataset_path allenai/ai2_arc, dataset_name ARC-Challenge."),
    HubSet("openbookqa", "allenai/openbookqa", config="main", lm_eval="openbookqa",
           splits={s: (f"main/{s}-00000-of-00001.parquet",) for s in ("train", "validation", "test")},
           note="lm-eval openbookqa: allenai/openbookqa, main. The repository holds main/ and additional/ "
                "folders since 'Convert dataset to Parquet (#6)'; additional/<split>-00000-of-00001.parquet "
                "is confirmed by its tree listing, main/ assumed to be named alike."),
    HubSet("boolq", "aps/super_glue", config="boolq", lm_eval="boolq",
           splits={s: (f"boolq/{s}-00000-of-00001.parquet",) for s in ("train", "validation", "test")},
           note="lm-eval boolq reads aps/super_glue, boolq (not google/boolq). Layout from the tree listing "
                "of main/boolq after 'Convert dataset to Parquet (#16)'."),
    HubSet("winogrande", "allenai/winogrande", config="winogrande_xl", lm_eval="winogrande",
           splits={s: (f"winogrande_xl/{s}-00000-of-00001.parquet",) for s in ("train", "validation", "test")},
           note="lm-eval winogrande: allenai/winogrande, winogrande_xl. Layout from the tree listing at "
                "commit df8eb8fe2e3ab788ec6eada56b9203a86a34c93d ('Add winogrande_xl config data files'); "
                "older revisions hold only the loading script winogrande.py, which offline cannot run."),
    HubSet("sciq", "allenai/sciq", lm_eval="sciq",
           splits={s: (f"data/{s}-00000-of-00001.parquet",) for s in ("train", "validation", "test")},
           note="lm-eval sciq: allenai/sciq (the paper's benchmark list includes SciQ). Layout "
                "data/<split>-00000-of-00001.parquet from public scripts' resolve/main URLs (not a tree listing)."),
    HubSet("piqa", "baber/piqa", lm_eval="piqa",
           splits={s: (f"piqa_{s}.parquet",) for s in ("train", "validation", "test")},
           note="lm-eval 0.4.13 piqa reads baber/piqa (ybisk/piqa is a loading script). Layout from its "
                "tree listing (main: piqa_train/validation/test.parquet at the root)."),
    HubSet("hellaswag", "Rowan/hellaswag", lm_eval="hellaswag",
           splits={s: (f"data/{s}-00000-of-00001.parquet",) for s in ("train", "validation")},
           note="lm-eval hellaswag: Rowan/hellaswag. Layout data/<split>-00000-of-00001.parquet from public "
                "scripts' resolve/main URLs (not a tree listing: older trees hold only hellaswag.py; one "
                "public script reports the repository answering HTTP 451 in some regions)."),
]
REGISTRY: dict[str, HubSet] = {s.name: s for s in _SETS}
# local data-registry names that have a hub counterpart under another name
ALIASES = {"sst2_glue": "sst2", "wikitext2_tokenized_valid_test": "wikitext"}


def register(hs: HubSet, replace: bool = False) -> HubSet:
    """Add a chapter's own hub set (e.g. a fine-tuning task); an existing name needs ``replace``."""
    if not isinstance(hs, HubSet):
        raise HubDataError(f"register() takes a HubSet, got {type(hs).__name__}")
    if hs.name in REGISTRY and not replace and REGISTRY[hs.name] != hs:
        raise HubDataError(f"hub set {hs.name!r} is already registered ({REGISTRY[hs.name].hub_id}); "
                           f"pass replace=True to redefine it")
    REGISTRY[hs.name] = hs
    return hs


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> HubSet:
    name = ALIASES.get(name, name)
    if name not in REGISTRY:
        raise HubDataError(f"unknown hub data set {name!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def source_for(profile: str) -> str:
    """Where a chapter reads its data by default: "hub" at paper, "local" at smoke, cpu and gpu
    (gpu may read the hub where its chapter's preset says so)."""
    from . import profiles
    profiles.get_profile(profile)  # a clear error for an unknown profile
    return "hub" if profile == "paper" else "local"


# --------------------------------------------------------------------------- the cache
def cache_dir() -> Path:
    """The hub cache: ``$HF_HUB_CACHE`` (read now, not at import), else ``$HF_HOME/hub``."""
    from . import weights
    return weights.hub_cache_dir()


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``HF_DATASETS_OFFLINE``) set to a true value, read now."""
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        v = os.environ.get(k)
        if v is not None and v.strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return True
    return False


def _check_split(hs: HubSet, split: str) -> None:
    if split not in hs.all_splits():
        raise HubDataError(f"hub data set {hs.name!r} ({hs.hub_id}) has no split {split!r}; "
                           f"allowed: {', '.join(hs.all_splits())}")


def _fail(hs: HubSet, revision: str, patterns, why: str) -> HubDataError:
    on = [k for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
          if os.environ.get(k, "").strip().upper() in {"1", "ON", "YES", "TRUE"}]
    how = (f"{' and '.join(f'{k}={os.environ[k]}' for k in on)} is set, so nothing is downloaded: fetch it "
           f"once online (huggingface-cli download {hs.hub_id} --repo-type dataset --revision {revision} "
           f"--include '{patterns[0]}', or python -m coft_utils.foundation.hubdata fetch {hs.name}), point "
           f"HF_HUB_CACHE at a cache that holds it, or unset {' '.join(on)}") if on else \
        "check the hub id, revision and network access"
    return HubDataError(f"hub data set {hs.name!r}: {why} -- hub id {hs.hub_id!r}, revision {revision!r}, "
                        f"pattern(s) {', '.join(map(repr, patterns))}, cache folder {cache_dir()}; {how}")


def _snapshot(hs: HubSet, revision: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(hs.hub_id, repo_type="dataset", revision=revision,
                                      allow_patterns=patterns, cache_dir=str(cache_dir()),
                                      local_files_only=offline()))
    except Exception as e:  # LocalEntryNotFoundError, RevisionNotFoundError, network errors
        raise _fail(hs, revision, patterns, f"cannot get the files ({type(e).__name__}: {e})") from e


def _download(hs: HubSet, revision: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download
    try:
        return Path(hf_hub_download(hs.hub_id, filename, repo_type="dataset", revision=revision,
                                    cache_dir=str(cache_dir()), local_files_only=offline()))
    except Exception as e:
        raise _fail(hs, revision, [filename], f"file not found ({type(e).__name__}: {e})") from e


def files(name: str, split: str, max_files: int | None = None, revision: str | None = None) -> list[Path]:
    """The local paths of a split's files, after download or cache lookup, in repository order.
    A sharded split (C4) gives its first ``max_files`` shards (all of them when None)."""
    hs = get(name)
    _check_split(hs, split)
    if max_files is not None and (not isinstance(max_files, int) or max_files < 1):
        raise HubDataError(f"max_files = {max_files!r} must be an int >= 1 (or None: every file)")
    rev = revision or hs.revision
    if split in hs.shards:
        tmpl, n = hs.shards[split]
        k = n if max_files is None else min(n, max_files)
        return [_download(hs, rev, tmpl % i) for i in range(k)]
    patterns = list(hs.splits[split])
    snap = _snapshot(hs, rev, patterns)
    have = sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file() or p.is_symlink())
    out: list[Path] = []
    for pat in patterns:
        hit = [f for f in have if fnmatch.fnmatchcase(f, pat)]
        if not hit:
            raise _fail(hs, rev, [pat], f"split {split!r}: no file matches in snapshot {snap.name}")
        out.extend(snap / f for f in hit if snap / f not in out)
    return out[:max_files] if max_files is not None else out


_FEATURE = {"str": "string", "int": "int64", "float": "float64", "bool": "bool"}


def _features(schema: dict):
    import datasets
    if not schema or any(t not in _FEATURE for t in schema.values()):
        return None  # nested types (list[dict], ...): let datasets infer them
    return datasets.Features({k: datasets.Value(_FEATURE[t]) for k, t in schema.items()})


def load(name: str, split: str, source: str = "hub", max_files: int | None = None,
         revision: str | None = None):
    """A split as a ``datasets.Dataset`` with the registered schema: ``source="hub"`` from the hub
    (cache), ``source="local"`` through :func:`data.load` (the same schema where both exist)."""
    if source not in SOURCES:
        raise HubDataError(f"source = {source!r} is not allowed; allowed: {', '.join(SOURCES)}")
    if source == "local":
        if name in data.REGISTRY and data.spec(name).local:
            return data.load(name, split)
        hs = get(name)
        if hs.local is None:
            raise HubDataError(f"data set {name!r} has no local copy (hub only: {hs.hub_id}); "
                               f"use source='hub' (the paper profile)")
        return data.load(hs.local, hs.local_split.get(split, split))
    import datasets
    hs = get(name)
    paths = files(name, split, max_files=max_files, revision=revision)
    ds = datasets.load_dataset(hs.builder, data_files={split: [str(p) for p in paths]}, split=split,
                               **hs.builder_kwargs)
    if hs.parse is not None:
        ds = ds.map(hs.parse, remove_columns=ds.column_names, features=_features(hs.schema))
    return ds


def iter_texts(name: str, split: str, max_files: int | None = None, revision: str | None = None,
               field_name: str = "text") -> Iterator[str]:
    """The ``text`` of every record, file by file (each shard fetched only when reached)."""
    import datasets
    hs = get(name)
    _check_split(hs, split)
    if split in hs.shards:
        tmpl, n = hs.shards[split]
        k = n if max_files is None else min(n, max_files)
        chunks = ([_download(hs, revision or hs.revision, tmpl % i)] for i in range(k))
    else:
        chunks = ([p] for p in files(name, split, max_files=max_files, revision=revision))
    for paths in chunks:
        stream = datasets.load_dataset(hs.builder, data_files={"x": [str(p) for p in paths]}, split="x",
                                       streaming=True, **hs.builder_kwargs)
        for rec in stream:
            rec = hs.parse(rec) if hs.parse is not None else rec
            if field_name not in rec:
                raise HubDataError(f"hub data set {name!r} has no field {field_name!r}; fields: {', '.join(rec)}")
            yield rec[field_name]


def commit(name: str, revision: str | None = None) -> str:
    """The 40-hex commit ``revision`` resolves to: offline from the cache's ``refs/``, online from
    the hub (``HfApi().dataset_info``)."""
    hs = get(name)
    rev = revision or hs.revision
    if _HEX40.fullmatch(rev):
        return rev
    from huggingface_hub.file_download import repo_folder_name
    ref = cache_dir() / repo_folder_name(repo_id=hs.hub_id, repo_type="dataset") / "refs" / rev
    if ref.is_file() and _HEX40.fullmatch(ref.read_text().strip()):
        if offline():
            return ref.read_text().strip()
    if not offline():
        from huggingface_hub import HfApi
        sha = HfApi().dataset_info(hs.hub_id, revision=rev).sha
        if sha:
            return sha
    raise _fail(hs, rev, [f"refs/{rev}"], f"cannot resolve revision {rev!r} to a commit")


def provenance(name: str, split: str | None = None, max_files: int | None = None,
               revision: str | None = None) -> dict:
    """{"hub_id", "revision", "commit", "files"} for a results record: ``files`` are the repository
    paths read (of ``split``, else of every non-sharded split; a sharded split lists its first
    ``max_files`` shard names without fetching them)."""
    hs = get(name)
    rev = revision or hs.revision
    splits = [split] if split is not None else hs.all_splits()
    names_: list[str] = []
    for sp in splits:
        _check_split(hs, sp)
        if sp in hs.shards:
            tmpl, n = hs.shards[sp]
            if split is None and max_files is None:
                names_.append(tmpl.replace("%05d", "*"))
                continue
            names_.extend(tmpl % i for i in range(n if max_files is None else min(n, max_files)))
        else:
            for p in files(name, sp, max_files=max_files, revision=rev):
                names_.append(str(p).split("/snapshots/", 1)[1].split("/", 1)[1])
    return {"hub_id": hs.hub_id, "revision": rev, "commit": commit(name, rev), "files": names_}


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``python -m coft_utils.foundation.hubdata list`` (every hub set and its files) or
    ``... fetch NAME [NAME ...] [--split S] [--max-files K]``: download into the hub cache (on a
    login node with network access), so compute nodes can then run with HF_HUB_OFFLINE=1."""
    import argparse
    import json
    ap = argparse.ArgumentParser(prog="python -m coft_utils.foundation.hubdata", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every registered hub set: hub id, revision, files per split")
    f = sub.add_parser("fetch", help="download sets into the hub cache ($HF_HUB_CACHE) and print their provenance")
    f.add_argument("names", nargs="+", help=f"hub sets ('all' for every one): {', '.join(REGISTRY)}")
    f.add_argument("--split", default=None, help="one split (default: every split)")
    f.add_argument("--max-files", type=int, default=2, help="shards of a sharded split such as C4 (default 2)")
    a = ap.parse_args(argv)
    if a.cmd == "list":
        for hs in REGISTRY.values():
            parts = [f"{sp}: {', '.join(p)}" for sp, p in hs.splits.items()]
            parts += [f"{sp}: {t} x {n}" for sp, (t, n) in hs.shards.items()]
            print(f"{hs.name:14s} {hs.hub_id}@{hs.revision}  " + "; ".join(parts))
        return 0
    names_ = list(REGISTRY) if a.names == ["all"] else a.names
    for n in names_:
        get(n)  # every name checked before any download
    for n in names_:
        hs = get(n)
        for sp in ([a.split] if a.split else hs.all_splits()):
            files(n, sp, max_files=a.max_files if sp in hs.shards else None)
        print(json.dumps({n: provenance(n, a.split, max_files=a.max_files if hs.shards else None)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
