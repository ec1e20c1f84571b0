"""Pre-flight: before a gpu/paper run spends GPU hours, check that every checkpoint of its series
exists and that no two checkpoints of different training points hold the same weights::

    from coft_utils.foundation import preflight
    rep = preflight.check("olmo-1b")             # a series (name, dict, file or CheckpointSeries)
    rep.checkpoints[0].revision, rep.checkpoints[0].commit, rep.checkpoints[0].files
    print(rep.summary())                         # what was checked, one line per checkpoint
    preflight.check_config(cfg)                  # a chapter config with a ``series`` field
                                                 # (what the runner calls before gpu/paper)

:func:`check` raises :class:`PreflightError` naming every missing revision and every pair of
checkpoints with different tokens whose weight files are byte-identical (the same set of
sha256), by label and revision. Nothing is downloaded:

* online (``online=None``: online unless ``HF_HUB_OFFLINE`` is set): the hub's refs
  (``HfApi().list_repo_refs``) give each revision's commit, and ``HfApi().list_repo_tree(...,
  revision=commit)`` the LFS sha256 the hub reports per weight file;
* offline: the local hub cache (``HF_HUB_CACHE``): ``refs/<revision>`` -> commit, and
  ``snapshots/<commit>/<file>`` -> ``blobs/<sha256>`` (an LFS file's blob name is its sha256);
* local folders: :func:`coft_utils.foundation.weights.fingerprint` (cached by stat), so a local
  series costs a few stat calls once fingerprinted.

Weight files are ``*.safetensors`` when a revision has any, else ``pytorch_model*.bin`` (what
``models.load_model`` loads). Known duplicate branches of the built-in series are listed in
``series.KNOWN_DUPLICATES`` (allenai/OLMo issue #915); this check finds them from the hashes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from . import series as _series
from .series import Checkpoint, CheckpointSeries, SeriesError
from . import checksums, weights

__all__ = ["check", "check_config", "Report", "CheckpointReport", "PreflightError"]

_HEX64 = re.compile(r"[0-9a-f]{64}")


class PreflightError(SeriesError):
    """A series that must not be run: missing revisions or duplicate weights (``.report`` holds
    the full :class:`Report`)."""

    def __init__(self, message: str, report: "Report"):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class CheckpointReport:
    label: str
    tokens: float
    source: str                       # 'hub_id@revision' or the local folder
    revision: str | None = None       # hub revision (None for a local folder)
    commit: str | None = None         # 40-hex commit the revision points at
    files: dict = field(default_factory=dict)   # weight file -> sha256 (local: fingerprint)
    missing: str | None = None        # why it could not be found, when it could not

    @property
    def hashes(self) -> frozenset:
        return frozenset(self.files.values())


@dataclass(frozen=True)
class Report:
    series: str
    mode: str                         # 'online', 'offline', 'local' or 'skipped'
    checkpoints: tuple[CheckpointReport, ...]
    duplicates: tuple[tuple[CheckpointReport, ...], ...] = ()   # groups of >= 2 checkpoints
    note: str = ""

    @property
    def missing(self) -> list[CheckpointReport]:
        return [c for c in self.checkpoints if c.missing]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.duplicates

    def summary(self) -> str:
        lines = [f"pre-flight of series {self.series!r} ({self.mode}): {len(self.checkpoints)} checkpoint(s), "
                 f"{len(self.missing)} missing, {len(self.duplicates)} duplicate-weight group(s)"
                 + (f"; {self.note}" if self.note else "")]
        for c in self.checkpoints:
            state = f"MISSING ({c.missing})" if c.missing else \
                f"{c.commit or '-'} " + ", ".join(f"{n}:{h[:12]}" for n, h in sorted(c.files.items()))
            lines.append(f"  {c.label:>10}  {c.source}  {state}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- weight files
def _weight_names(names) -> list[str]:
    fmt = weights.weight_format(names)
    if fmt == "safetensors":
        return sorted(n for n in names if n.endswith(".safetensors"))
    if fmt == "bin":
        return sorted(n for n in names if n.rsplit("/", 1)[-1].startswith("pytorch_model") and n.endswith(".bin"))
    return []


def _offline_hub(c: Checkpoint) -> CheckpointReport:
    rev = c.revision or "main"
    base = dict(label=c.label, tokens=c.tokens, source=c.source, revision=rev)
    got = weights.cached_snapshot(c.hub_id, rev)
    if got is None:
        return CheckpointReport(**base, missing=f"not in the local cache {weights.hub_cache_dir()}; "
                                               f"download it first or run online")
    commit, snap = got
    names = sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())
    files = {}
    for n in _weight_names(names):
        p = snap / n
        blob = p.resolve().name if p.is_symlink() else ""
        files[n] = blob if _HEX64.fullmatch(blob) else checksums._sha256(p)  # LFS blob name = sha256
    if not files:
        return CheckpointReport(**base, commit=commit,
                                missing=f"snapshot {snap} holds no weight files (*.safetensors or pytorch_model*.bin)")
    return CheckpointReport(**base, commit=commit, files=files)


def _online_hub(cks: list[Checkpoint]) -> list[CheckpointReport]:
    from huggingface_hub import HfApi
    api = HfApi()
    out = []
    refs_of: dict[str, dict[str, str] | None] = {}
    for c in cks:
        rev = c.revision or "main"
        base = dict(label=c.label, tokens=c.tokens, source=c.source, revision=rev)
        if c.hub_id not in refs_of:
            from huggingface_hub.errors import RepositoryNotFoundError
            try:
                refs = api.list_repo_refs(c.hub_id)
                refs_of[c.hub_id] = {r.name: r.target_commit for r in (*refs.branches, *refs.tags)}
            except RepositoryNotFoundError:   # also raised for gated/private repos without access
                refs_of[c.hub_id] = None
        if refs_of[c.hub_id] is None:
            out.append(CheckpointReport(**base, missing=f"repository {c.hub_id} not found on the hub "
                                                       f"(or not accessible with this token)"))
            continue
        commit = rev if re.fullmatch(r"[0-9a-f]{40}", rev) else refs_of[c.hub_id].get(rev)
        if commit is None:
            out.append(CheckpointReport(**base, missing=f"no branch or tag {rev!r} in {c.hub_id} on the hub"))
            continue
        entries = {e.path: e for e in api.list_repo_tree(c.hub_id, revision=commit, recursive=True)
                   if getattr(e, "size", None) is not None and hasattr(e, "blob_id")}
        files = {}
        for n in _weight_names(list(entries)):
            e = entries[n]
            lfs = getattr(e, "lfs", None)
            sha = getattr(lfs, "sha256", None) if lfs is not None else None
            files[n] = sha or f"git:{e.blob_id}"
        if not files:
            out.append(CheckpointReport(**base, commit=commit,
                                        missing=f"{c.hub_id}@{rev} holds no weight files (*.safetensors or pytorch_model*.bin)"))
            continue
        out.append(CheckpointReport(**base, commit=commit, files=files))
    return out


def _local(c: Checkpoint) -> CheckpointReport:
    base = dict(label=c.label, tokens=c.tokens, source=c.path)
    if not Path(c.path).is_dir():
        return CheckpointReport(**base, missing=f"local folder {c.path} does not exist")
    try:
        return CheckpointReport(**base, files={"(fingerprint)": weights.fingerprint(c.path, c.label)})
    except SeriesError as e:
        return CheckpointReport(**base, missing=str(e))


# --------------------------------------------------------------------------- the check
def _duplicates(reps: list[CheckpointReport]) -> tuple[tuple[CheckpointReport, ...], ...]:
    by_hash: dict[frozenset, list[CheckpointReport]] = {}
    for r in reps:
        if not r.missing and r.files:
            by_hash.setdefault(r.hashes, []).append(r)
    return tuple(tuple(g) for g in by_hash.values() if len({r.tokens for r in g}) > 1)


def _message(s: CheckpointSeries, rep: Report) -> str:
    parts = []
    if rep.missing:
        parts.append(f"series {s.name!r}: {len(rep.missing)} missing checkpoint(s):\n" + "\n".join(
            f"  {c.label} ({c.source}): {c.missing}" for c in rep.missing))
    for g in rep.duplicates:
        names = " and ".join(f"{c.label} ({c.revision or c.source})" for c in g)
        shas = ", ".join(f"{h[:16]}... for {n}" for n, h in sorted(g[0].files.items())[:3])
        parts.append(f"series {s.name!r}: checkpoints {names} have byte-identical weights (sha256 {shas}); "
                     f"drop all but one of them (-p checkpoints [...]) or fix the series")
    return "\n".join(parts)


def check(spec, online: bool | None = None, raise_error: bool = True) -> Report:
    """Check every checkpoint of a series (see the module docstring); returns the :class:`Report`,
    raising :class:`PreflightError` (with ``.report``) when any is missing or two checkpoints of
    different tokens share their weight files, unless ``raise_error=False``."""
    s = _series.load(spec)
    if online is None:
        online = not weights._offline()
    hub = [c for c in s if c.hub_id and not c.path]
    reps_by_label: dict[str, CheckpointReport] = {}
    if hub:
        hub_reps = _online_hub(hub) if online else [_offline_hub(c) for c in hub]
        reps_by_label.update({r.label: r for r in hub_reps})
    for c in s:
        if c.path:
            reps_by_label[c.label] = _local(c)
    reps = [reps_by_label[c.label] for c in s]
    mode = ("online" if online else "offline") if hub else "local"
    rep = Report(s.name, mode, tuple(reps), _duplicates(reps))
    if raise_error and not rep.ok:
        raise PreflightError(_message(s, rep), rep)
    return rep


def check_config(cfg, online: bool | None = None, raise_error: bool = True) -> Report:
    """:func:`check` on the series a chapter config names (``cfg.series``, restricted to
    ``cfg.checkpoints``). For ``series='suite'`` nothing is trained: the suite's cached series is
    fingerprinted when chapter 00 has built it; otherwise the report says so (mode 'skipped')."""
    spec = getattr(cfg, "series", None)
    if spec is None:
        raise SeriesError(f"config {type(cfg).__name__} has no 'series' field; pre-flight checks "
                          "chapters on a checkpoint series")
    if spec == "suite":
        from . import registry
        exp = registry.experiment(_series.SUITE_CHAPTER)
        model = getattr(cfg, "suite_model", "")
        s = exp.cached_suite(cfg.profile, cfg.schedule, 0, {"model": model} if model else None) \
            if hasattr(exp, "cached_suite") else None
        if s is None:
            return Report("suite", "skipped", (), note="the suite is not built yet; chapter 00 builds it here, "
                                                        "so there is no hub revision to check")
    else:
        s = _series.load(spec)
    if getattr(cfg, "checkpoints", None):
        s = s.select(cfg.checkpoints)
    return check(s, online=online, raise_error=raise_error)
