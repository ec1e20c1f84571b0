"""Named size presets ("profiles") and parameter validation, like minGPT's ``gpt-nano``.

Every chapter owns one frozen ``Config`` dataclass and a ``PRESETS`` dict that maps each
profile name to an instance of it (in the chapter's module, e.g. ``coft_utils.chapters.theory``). This
module knows the profiles, finds a chapter's presets, applies user overrides and validates
every field *before* any work starts::

    from coft_utils.foundation import profiles
    cfg = profiles.resolve("05_linear_theory", "cpu", {"gammas": [0.1, 0.2]}, seed=0)
    cfg.gammas            # -> (0.1, 0.2)
    profiles.describe(cfg)   # -> table rows (name, value, allowed) for the book

Declare a field with :func:`param` so the validator knows what is allowed::

    @dataclass(frozen=True)
    class Config(profiles.ChapterConfig):
        gammas: tuple[float, ...] = param((0.01,), "noise scales", min=0.0)
        n_steps: int = param(100, "training steps", min=1)
        scale: str = param("init", "noise scale", choices=("init", "empirical"))

An unknown profile, an unknown key, a value of the wrong type or out of range raises
:class:`ProfileError`, whose message names the bad value and lists what is allowed. The type
of a sequence's elements comes from ``param(..., item=str)``, the default's first element or
the annotation (``tuple[str, ...]``), so a sequence whose default is empty is typed too.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import registry as _registry

__all__ = [
    "PROFILES", "CHAPTERS", "ProfileError", "Profile", "ChapterConfig", "SeriesConfig", "param", "get_profile", "preset",
    "resolve", "describe", "validate", "apply_offline_env", "series_info", "SeriesInfo", "OfflineWarning",
    "offline_vars_set", "OFFLINE_VARS",
]


class ProfileError(ValueError):
    """A profile, parameter name or parameter value that is not allowed."""


@dataclass(frozen=True)
class Profile:
    """Where and how big a run is. Chapter-specific sizes live in each chapter's ``PRESETS``."""

    name: str
    description: str
    budget: str
    offline: bool  # True (smoke, cpu): nothing may be downloaded (HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1)
    device: str  # "cpu" or "auto" (cuda when available)
    base: str | None = None  # a chapter without a preset for this profile uses its preset for ``base``
    chapters: tuple[str, ...] | None = None  # the chapters `book` runs at this profile (None: all)
    reference: bool = False  # a reference run: `book` copies its records to results/<profile>/


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("smoke", "CI and tests: tiny suite, a few steps", "seconds per notebook", True, "cpu"),
        Profile("cpu", "any laptop, 2 cores (the default)", "whole book in <= 45 min", True, "cpu"),
        Profile("gpu", "one H100/A100: a larger suite, more tokens; local data by default, the hub "
                "where a chapter's preset says so", "<= 30 min per notebook", False, "auto"),
        Profile("paper", "A100 machines: the paper's settings, hub checkpoints and hub data "
                "(coft_utils.foundation.hubdata)", "the paper's compute", False, "auto"),
        # the laptop's reference run (issue 25): the fine-tuning chapters' series deeper, with
        # pre-training replicates; records committed under results/cpu-deep/ (claims: "reference run")
        Profile("cpu-deep", "2 cores, the reference run: the cpu book's series to 64M tokens (1,024 tokens "
                "per parameter) with 3 pre-training runs, through chapters 00, 02, 03, 04, 06",
                "<= 2 h on 2 cores (resumable)", True, "cpu", base="cpu",
                chapters=("00_pretraining_suite", "02_gaussian_sensitivity", "03_fixed_lr_finetuning",
                          "04_lr_sweep", "06_mitigations", "98_verdicts", "99_claims"), reference=True),
    )
}
DEFAULT_PROFILE = "cpu"

# chapter (notebook stem) -> module that defines ``Config`` and ``PRESETS``
# chapter -> its experiment module (the one with Config and PRESETS), read from the registry
CHAPTERS: dict[str, str] = {name: c.experiment for name, c in _registry.CHAPTERS.items()}


def param(default: Any, help: str, *, min: float | None = None, max: float | None = None,
          choices: tuple | None = None, min_exclusive: bool = False, max_exclusive: bool = False,
          nullable: bool = False, allow_empty: bool = False, item: type | None = None):
    """A dataclass field with its allowed range, used by :func:`validate` and :func:`describe`.

    Sequence parameters never take repeated values, and take an empty list only when their
    default is empty or ``allow_empty`` is set (an empty list that means "none" or "all").
    ``item`` is the type of a sequence's elements (str, int, float or bool); without it the
    type comes from the first element of the default, else from the annotation
    (``tuple[str, ...]``). A ``None`` default takes its type from the annotation (``str``)."""
    if item is not None and item not in _PROTOS:
        raise TypeError(f"item must be one of {', '.join(t.__name__ for t in _PROTOS)}, got {item!r}")
    meta = dict(help=help, min=min, max=max, choices=choices, min_exclusive=min_exclusive,
                max_exclusive=max_exclusive, nullable=nullable, allow_empty=allow_empty, item=item)
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple (immutable) as the default of a sequence parameter")
    return field(default=default, metadata=meta)


_PROTOS: dict[type, Any] = {str: "", int: 0, float: 0.0, bool: False}  # a value of each element type
_TYPE_NAMES = {t.__name__: v for t, v in _PROTOS.items()}


def _annotation_proto(annotation: Any) -> tuple[str | None, Any]:
    """("seq" | "scalar" | None, a value of the element / scalar type) from an annotation such
    as ``tuple[str, ...]``, ``str | None`` or ``Optional[float]`` (strings under
    ``from __future__ import annotations``); (None, None) when it names no simple type."""
    s = annotation if isinstance(annotation, str) else \
        annotation.__name__ if isinstance(annotation, type) else str(annotation)
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"^(?:typing\.)?Optional\[(.*)\]$", r"\1", s)
    s = re.sub(r"(?:\|None|^None\|)", "", s)
    m = re.fullmatch(r"(?:typing\.)?(?:tuple|Tuple)\[(\w+),\.\.\.\]", s)
    if m:
        return ("seq", _TYPE_NAMES[m[1]]) if m[1] in _TYPE_NAMES else (None, None)
    if s in _TYPE_NAMES:
        return "scalar", _TYPE_NAMES[s]
    return None, None


@dataclass(frozen=True)
class ChapterConfig:
    """Base of every chapter's config: the profile it came from and the seed."""

    profile: str = param("cpu", "named preset", choices=tuple(PROFILES))
    seed: int = param(0, "random seed of the whole run", min=0, max=10 ** 8)

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class SeriesConfig(ChapterConfig):
    """Base of the chapters that run on a checkpoint series (one vocabulary for all of them);
    ``coft_utils.foundation.series.for_config(cfg)`` loads what these fields name.

    :func:`validate` checks them for every such chapter before any work (nothing is trained or
    loaded): ``series`` is 'suite', a built-in name or an existing series .json; ``checkpoints``
    are labels of that series; and at an offline profile (``Profile.offline``: smoke, cpu)
    no chosen checkpoint may be hub-only (a ``hub_id`` without a local ``path``)."""

    series: str = param("suite", "checkpoint series: 'suite' (this project's pre-training suite), a "
                        "built-in hub series (olmo-1b, pythia-70m, ...) or a series .json/.yaml path")
    schedule: str = param("cosine", "LR schedule of the suite's pre-training (series='suite' only)",
                          choices=("cosine", "wsd", "constant", "wsd_short"))
    checkpoints: tuple[str, ...] = param((), "checkpoint labels to use (empty: all of the series)", item=str)
    suite_model: str = param("", "the suite's model preset (series='suite' only; '' = chapter 00's at this "
                             "profile; at paper: olmo-15m, olmo-30m (the default) or olmo-90m, the paper's three)")
    pretrain_runs: int = param(1, "pre-training runs of the suite measured (series='suite' only): chapter 00's runs "
                               "of `schedule` at seeds 0 .. n-1, each with its own fine-tuning/noise seeds; the "
                               "verdicts then take the pre-training run as the unit of replication", min=1, max=16)


def _plain(v):
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ProfileError(f"unknown profile {name!r}; allowed: {', '.join(PROFILES)}")
    return PROFILES[name]


OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


class OfflineWarning(UserWarning):
    """An online profile (gpu, paper) run while the environment forbids hub downloads."""


def offline_vars_set() -> list[str]:
    """The offline variables set to a true value in this environment ("1", "ON", "YES", "TRUE")."""
    return [k for k in OFFLINE_VARS
            if os.environ.get(k, "").strip().upper() in {"1", "ON", "YES", "TRUE"}]


def apply_offline_env(profile: str) -> None:
    """At offline profiles (smoke, cpu) make sure nothing is looked up on the hub (a lookup hangs
    ~25 s here). At online profiles (gpu, paper) nothing is set; if the shell has set an offline
    variable, warn before any work, naming it and how to unset it: only files already in the hub
    cache can then be read (which is what the tests do on purpose, with a local cache)."""
    if get_profile(profile).offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        return
    on = offline_vars_set()
    if on:
        import warnings
        cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
        warnings.warn(f"profile {profile!r} reads checkpoints and data from the Hugging Face hub, but "
                      f"{', '.join(f'{k}={os.environ[k]}' for k in on)} is set in this environment: nothing "
                      f"will be downloaded, and only files already in the hub cache ({cache}) can be used. "
                      f"To download, run: unset {' '.join(on)}", OfflineWarning, stacklevel=2)


def preset(chapter: str, profile: str) -> ChapterConfig:
    """The chapter's preset for ``profile``: its own, else (a profile with a ``base``) the base
    profile's preset, marked with this profile. Raises :class:`ProfileError` when there is none."""
    presets = _chapter_presets(chapter)
    base = get_profile(profile).base
    if profile in presets:
        return presets[profile]
    if base in presets:
        return dataclasses.replace(presets[base], profile=profile)
    raise ProfileError(f"chapter {chapter!r} has no preset for profile {profile!r}; allowed: {', '.join(presets)}")


def _chapter_presets(chapter: str) -> dict[str, ChapterConfig]:
    if chapter not in CHAPTERS:
        raise ProfileError(f"unknown chapter {chapter!r}; allowed: {', '.join(CHAPTERS)}")
    mod = importlib.import_module(CHAPTERS[chapter])
    presets = getattr(mod, "PRESETS")
    if isinstance(presets, Mapping) and chapter in presets and isinstance(presets[chapter], Mapping):
        presets = presets[chapter]  # a module serving several chapters keys presets by chapter
    return presets


def _check_type(name: str, value: Any, default: Any, meta: dict) -> Any:
    """Coerce ``value`` to the type of ``default`` (lists become tuples) or raise."""
    if value is None:
        if meta.get("nullable") or default is None:
            return None
        raise ProfileError(f"parameter {name!r} may not be None")
    if isinstance(default, tuple):
        if isinstance(value, Mapping):
            raise ProfileError(f"parameter {name!r} must be a list, got {value!r}")
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            value = (value,)
        proto = meta["item_proto"] if meta.get("item_proto") is not None else default[0] if default else None
        inner = {k: v for k, v in meta.items() if k != "item_proto"}
        return tuple(_check_type(f"{name}[{i}]", v, proto, inner) for i, v in enumerate(value))
    if default is None and meta.get("item_proto") is not None:  # a None default typed by its annotation
        return _check_type(name, value, meta["item_proto"], {k: v for k, v in meta.items() if k != "item_proto"})
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ProfileError(f"parameter {name!r} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, str):
            try:
                value = float(value)  # "1e6" from the command line (YAML reads it as a string)
            except ValueError:
                raise ProfileError(f"parameter {name!r} must be an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
            raise ProfileError(f"parameter {name!r} must be an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool):
            raise ProfileError(f"parameter {name!r} must be a number, got {value!r}")
        if not isinstance(value, (int, float)):
            try:
                value = float(value)  # "1e-3" from the command line
            except (TypeError, ValueError):
                raise ProfileError(f"parameter {name!r} must be a number, got {value!r}") from None
        value = float(value)
        if not math.isfinite(value):
            raise ProfileError(f"parameter {name!r} must be a finite number, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ProfileError(f"parameter {name!r} must be a string, got {value!r}")
        return value
    return value  # untyped (None default or proto of an empty tuple)


def _check_range(name: str, value: Any, meta: dict) -> None:
    vals = value if isinstance(value, tuple) else (value,)
    for v in vals:
        if v is None:
            continue
        if meta.get("choices") is not None and v not in meta["choices"]:
            raise ProfileError(f"parameter {name!r} = {v!r} is not allowed; allowed: "
                               f"{', '.join(map(repr, meta['choices']))}")
        lo, hi = meta.get("min"), meta.get("max")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if lo is not None and (v < lo or (meta.get("min_exclusive") and v == lo)):
                op = ">" if meta.get("min_exclusive") else ">="
                raise ProfileError(f"parameter {name!r} = {v!r} is out of range; allowed: {op} {lo}"
                                   + (f" and <= {hi}" if hi is not None else ""))
            if hi is not None and (v > hi or (meta.get("max_exclusive") and v == hi)):
                raise ProfileError(f"parameter {name!r} = {v!r} is out of range; allowed: "
                                   f"{'<' if meta.get('max_exclusive') else '<='} {hi}")


def _allowed(meta: dict) -> str:
    if meta.get("choices") is not None:
        return "one of " + ", ".join(map(str, meta["choices"]))
    parts = []
    if meta.get("min") is not None:
        parts.append(("> " if meta.get("min_exclusive") else ">= ") + str(meta["min"]))
    if meta.get("max") is not None:
        parts.append(("< " if meta.get("max_exclusive") else "<= ") + str(meta["max"]))
    return " and ".join(parts) or "any"


def _item_proto(f: dataclasses.Field) -> Any:
    """A value of the declared element type of a sequence field (``item=`` or the annotation),
    or of the scalar type of a field whose default is None; None when nothing is declared."""
    item = f.metadata.get("item")
    if item is not None:
        return _PROTOS[item]
    kind, proto = _annotation_proto(f.type)
    if isinstance(f.default, tuple) and kind == "seq":
        return proto
    if f.default is None and kind == "scalar":
        return proto
    return None


# --------------------------------------------------------------------------- checkpoint series
@dataclass(frozen=True)
class SeriesInfo:
    """What a :class:`SeriesConfig`'s ``series`` names, known without loading any model."""

    kind: str  # "suite" | "builtin" | "file"
    labels: tuple[str, ...]  # every checkpoint label of the series, in order
    hub: tuple[str, ...]  # labels of the checkpoints that are on the hub only (no local path)
    hub_ids: tuple[str, ...]  # their hub repositories


def series_info(series: str, profile: str, schedule: str = "cosine") -> SeriesInfo:
    """The labels of ``series`` and which of its checkpoints need the hub; raises
    :class:`ProfileError` for a series that is none of 'suite', a built-in name, a series .json.

    The project's suite is not trained here: its labels follow from the pre-training preset of
    ``profile`` (one per token budget of ``schedule``: cosine may stop earlier)."""
    from . import models, series as series_mod
    if series == "suite":
        pretrain = _registry.experiment(series_mod.SUITE_CHAPTER)
        pre = dataclasses.replace(preset(series_mod.SUITE_CHAPTER, profile), schedule=schedule)
        return SeriesInfo("suite", tuple(pretrain.budget_labels(pre)), (), ())
    allowed = ("allowed: 'suite' (this project's pre-training suite), a built-in series ("
               + ", ".join(models.SERIES) + ") or the path of a series .json/.yaml file")
    if series in models.SERIES:
        s, kind = models.SERIES[series], "builtin"
    elif series.endswith(series_mod.FILE_SUFFIXES):
        if not os.path.isfile(series):
            raise ProfileError(f"parameter 'series' = {series!r}: no such file; {allowed}")
        try:
            s, kind = series_mod.load(series), "file"
        except (models.SeriesError, OSError, ValueError) as e:
            raise ProfileError(f"parameter 'series' = {series!r} is not a valid series file: {e}") from None
    else:
        raise ProfileError(f"parameter 'series' = {series!r} is not a known series; {allowed}")
    hub = tuple(c for c in s.checkpoints if not c.path)
    return SeriesInfo(kind, tuple(c.label for c in s.checkpoints), tuple(c.label for c in hub),
                      tuple(dict.fromkeys(c.hub_id for c in hub)))


def _check_series(cfg: "SeriesConfig") -> SeriesInfo:
    """The rules every chapter on a checkpoint series shares: the series exists, the chosen
    ``checkpoints`` are its labels, and an offline profile uses no checkpoint from the hub."""
    info = series_info(cfg.series, cfg.profile, cfg.schedule)
    if cfg.suite_model:
        from . import models
        if cfg.series != "suite":
            raise ProfileError(f"parameter 'suite_model' = {cfg.suite_model!r} applies to series 'suite' only "
                               f"(series is {cfg.series!r}); allowed: '' for any other series")
        if cfg.suite_model not in models.OLMO_PRESETS:
            raise ProfileError(f"parameter 'suite_model' = {cfg.suite_model!r} is not a model preset; allowed: "
                               f"'' or one of {', '.join(models.OLMO_PRESETS)}")
    bad = [c for c in cfg.checkpoints if c not in info.labels]
    # the hub rule first (a preset's checkpoint labels may belong to the suite, not to this series)
    chosen = set(c for c in cfg.checkpoints if c in info.labels) or set(info.labels)
    hub = [lab for lab in info.hub if lab in chosen]
    if hub and get_profile(cfg.profile).offline:
        online = [p.name for p in PROFILES.values() if not p.offline]
        raise ProfileError(
            f"parameter 'series' = {cfg.series!r} is a hub series (checkpoints on the Hugging Face hub: "
            f"{', '.join(info.hub_ids)}) and profile {cfg.profile!r} runs offline (nothing is downloaded); "
            f"allowed at profile {cfg.profile!r}: 'suite' (this project's pre-training suite) or a series "
            f".json whose checkpoints are local folders ('path'); a hub series needs "
            f"--profile {'|'.join(online)} on a machine with hub access")
    if bad:
        where = f"the suite at profile {cfg.profile!r}" if info.kind == "suite" else f"series {cfg.series!r}"
        raise ProfileError(f"parameter 'checkpoints' names {bad} that {where} does not have; allowed: "
                           f"labels of {list(info.labels)} (empty: all)")
    if info.kind == "file":
        _check_local_checkpoints(cfg.series, chosen)
    if cfg.pretrain_runs > 1 and cfg.series != "suite":
        raise ProfileError(f"parameter 'pretrain_runs' = {cfg.pretrain_runs} applies to series 'suite' only (series "
                           f"is {cfg.series!r}: one pre-training run); allowed: 1 for any other series")
    return info


_SHAPE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
# config.json spellings of the same field in other families (GPT-2: n_embd, n_layer, n_head)
_SHAPE_ALIASES = {"hidden_size": ("n_embd", "d_model"), "num_hidden_layers": ("n_layer", "num_layers"),
                  "num_attention_heads": ("n_head", "num_heads")}


def _shape_value(conf: dict, key: str):
    for k in (key, *_SHAPE_ALIASES.get(key, ())):
        if k in conf:
            return conf[k]
    return None


def _check_local_checkpoints(path: str, chosen: set) -> None:
    """A series file's chosen local checkpoints exist, hold weights, and are one model family:
    the same architecture and vocabulary (config.json's model_type, vocab_size, hidden_size,
    num_hidden_layers, num_attention_heads), as every chapter compares them at equal tokens with
    one tokenizer. Named errors before any work."""
    import json as _json

    from . import series as series_mod
    from .weights import _weight_files, weight_format
    shapes = {}
    for c in series_mod.load(path):
        if c.label not in chosen or not c.path:
            continue
        d = c.path  # relative paths are resolved against the file's folder by series.load
        if not os.path.isdir(d):
            raise ProfileError(f"parameter 'series' = {path!r}: checkpoint {c.label!r} has no folder {d}; allowed: "
                               "an existing local folder with the model's weights and config.json")
        from pathlib import Path as _P
        if weight_format(f.name for f in _weight_files(_P(d))) is None:
            raise ProfileError(f"parameter 'series' = {path!r}: checkpoint {c.label!r}: folder {d} has no weights "
                               "(*.safetensors or pytorch_model*.bin)")
        cf = _P(d) / "config.json"
        if cf.is_file():
            try:
                conf = _json.loads(cf.read_text())
            except ValueError as e:
                raise ProfileError(f"parameter 'series' = {path!r}: checkpoint {c.label!r}: {cf} is not valid JSON "
                                   f"(line {getattr(e, 'lineno', '?')}, column {getattr(e, 'colno', '?')})") from None
            shapes[c.label] = tuple(_shape_value(conf, k) for k in _SHAPE_KEYS)
    if len(set(shapes.values())) > 1:
        first = next(iter(shapes))
        odd = [lab for lab, sh in shapes.items() if sh != shapes[first]]
        diff = [f"{k}: {shapes[first][i]!r} vs {shapes[odd[0]][i]!r}" for i, k in enumerate(_SHAPE_KEYS)
                if shapes[first][i] != shapes[odd[0]][i]]
        raise ProfileError(f"parameter 'series' = {path!r} mixes model families: checkpoint {odd[0]!r} differs from "
                           f"{first!r} ({'; '.join(diff)}); allowed: checkpoints of one architecture and vocabulary "
                           "(one training run)")


def validate(cfg: ChapterConfig) -> ChapterConfig:
    """Check every field of ``cfg`` (types, ranges, choices, and the config's own ``check``)."""
    values = {}
    for f in dataclasses.fields(cfg):
        meta = dict(f.metadata)
        meta["item_proto"] = _item_proto(f)
        v = _check_type(f.name, getattr(cfg, f.name), f.default, meta)
        _check_range(f.name, v, meta)
        if isinstance(v, tuple):
            if not v and f.default and not meta.get("allow_empty"):
                raise ProfileError(f"parameter {f.name!r} must list at least one value (default: "
                                   f"{list(f.default)})")
            seen = [x for i, x in enumerate(v) if x in v[:i]]
            if seen:
                raise ProfileError(f"parameter {f.name!r} has repeated values {sorted(set(map(str, seen)))}: "
                                   f"{list(v)}; each value may appear once")
        values[f.name] = v
    cfg = dataclasses.replace(cfg, **values)
    if isinstance(cfg, SeriesConfig):
        _check_series(cfg)  # before the chapter's own rules: they may rely on a valid series
    check = getattr(cfg, "check", None)
    if callable(check):
        check()  # cross-field rules; raises ProfileError
    return cfg


def resolve(chapter: str, profile: str = DEFAULT_PROFILE, overrides: Mapping[str, Any] | None = None,
            seed: int | None = None) -> ChapterConfig:
    """The chapter's preset for ``profile`` with ``overrides`` applied, validated."""
    get_profile(profile)
    base = preset(chapter, profile)
    overrides = dict(overrides or {})
    if isinstance(base, SeriesConfig) and "checkpoints" not in overrides and base.checkpoints and any(
            k in overrides and overrides[k] != getattr(base, k) for k in ("series", "schedule", "suite_model")):
        # the preset's checkpoint labels are the preset series'; another series (or schedule) is
        # taken whole unless the caller names its checkpoints too
        overrides["checkpoints"] = ()
    if seed is not None:
        overrides["seed"] = seed
    names = {f.name: f for f in dataclasses.fields(base)}
    bad = [k for k in overrides if k not in names or k == "profile"]
    if bad:
        allowed = [f"{n} ({_allowed(f.metadata)})" for n, f in names.items() if n != "profile"]
        raise ProfileError(f"unknown parameter(s) {', '.join(map(repr, bad))} for chapter {chapter!r}; "
                           f"allowed: {'; '.join(allowed)}")
    cfg = dataclasses.replace(base, profile=profile, **overrides) if overrides else \
        dataclasses.replace(base, profile=profile)
    cfg = validate(cfg)
    apply_offline_env(profile)
    return cfg


def describe(cfg: ChapterConfig) -> list[dict]:
    """Rows (parameter, value, allowed, meaning) of a resolved config, for the book's tables."""
    rows = []
    for f in dataclasses.fields(cfg):
        rows.append(dict(parameter=f.name, value=_plain(getattr(cfg, f.name)),
                         allowed=_allowed(f.metadata), meaning=f.metadata.get("help", "")))
    return rows
