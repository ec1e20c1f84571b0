"""The execution-status page: what ran, where, when, from which commit, and how it ended.

The runner appends one line per chapter run to ``runs/runner_log.jsonl`` (this machine's
runs folder, ``$COFT_RUNS_DIR``): chapter, profile, seed, overridden parameters, outcome
(``ok`` / ``failed`` / ``terminated``), wall time, commit, date and, for a failure, the error.
:func:`write_page` turns the log into ``book/_generated/status.md`` at every build, so the page
is never typed in (like the QuantEcon lectures' status page)::

    from coft_utils.book import status
    status.log("03_fixed_lr_finetuning", "cpu", {"seed": 0, "overrides": {}}, "ok", 236.0)
    status.last_runs()            # DataFrame: the last run of each (chapter, profile, run)
    status.write_page(root)       # <root>/book/_generated/status.md
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path

from ..foundation import registry, results

__all__ = ["log_path", "log", "entries", "last_runs", "page", "write_page"]

OUTCOMES = ("ok", "failed", "terminated")


def log_path() -> Path:
    return results.runs_dir() / "runner_log.jsonl"


def log(chapter: str, profile: str, params: dict, outcome: str, wall_s: float, error: str = "") -> dict:
    """Append one run to the log (one ``write`` of one line with O_APPEND: lines of runs that
    end at the same time never interleave)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    git = results.git_commit()
    entry = {"chapter": chapter, "profile": profile, "seed": int((params or {}).get("seed") or 0),
             "overrides": dict((params or {}).get("overrides") or {}), "outcome": outcome,
             "wall_s": round(float(wall_s), 1), "commit": git.get("commit", "unknown"), "dirty": git.get("dirty"),
             "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             "host": platform.node(), "error": (error or "").strip().splitlines()[0][:300] if error else ""}
    p = log_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return entry


def entries() -> list[dict]:
    """Every logged run, oldest first (lines that do not parse are skipped)."""
    p = log_path()
    if not p.is_file():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(e, dict) and {"chapter", "profile", "outcome"} <= e.keys():
            out.append(e)
    return out


def _run_name(e: dict) -> str:
    parts = [f"seed {e['seed']}"] if e.get("seed") else []
    if e.get("overrides"):
        parts.append(", ".join(f"{k}={v}" for k, v in sorted(e["overrides"].items())))
    return "; ".join(parts) or "preset"


def last_runs():
    """One row per (chapter, profile, run: preset / seed / overrides): its last logged run, and
    how many runs of it were logged."""
    import pandas as pd
    rows: dict = {}
    counts: dict = {}
    for e in entries():
        key = (e["chapter"], e["profile"], _run_name(e))
        rows[key] = e
        counts[key] = counts.get(key, 0) + 1
    order = {n: i for i, n in enumerate(registry.names())}
    out = [{"chapter": k[0], "profile": k[1], "run": k[2], "outcome": e["outcome"], "wall_s": e.get("wall_s"),
            "commit": (e.get("commit") or "unknown")[:10] + ("+dirty" if e.get("dirty") else ""),
            "date": e.get("time", ""), "n_runs": counts[k], "error": e.get("error", "")}
           for k, e in rows.items()]
    df = pd.DataFrame(out, columns=["chapter", "profile", "run", "outcome", "wall_s", "commit", "date",
                                    "n_runs", "error"])
    if len(df):
        df = df.assign(_o=df.chapter.map(lambda c: order.get(c, 99))).sort_values(["profile", "_o", "run"]) \
            .drop(columns="_o").reset_index(drop=True)
    return df


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def page() -> str:
    """The status page as MyST markdown."""
    df = last_runs()
    lines = ["# Execution status", "",
             "Every chapter run on the machine that built this site, from the runner's own log "
             "(`runs/runner_log.jsonl`): for each chapter and profile, the last run's outcome, wall time, "
             "commit and date. A run with another seed or overridden parameters has its own row. "
             "Nothing here is typed in; the page is written at every build.", ""]
    if not len(df):
        lines.append("No chapter has been run on this machine yet (`make book` runs them all).")
        return "\n".join(lines) + "\n"
    for prof, d in df.groupby("profile", sort=False):
        ok = int((d.outcome == "ok").sum())
        lines += [f"## Profile `{prof}`", "", f"{ok} of {len(d)} runs ended ok.", "",
                  "| chapter | run | outcome | wall time | commit | date (UTC) | runs logged |",
                  "|---|---|---|---|---|---|---|"]
        for r in d.itertuples():
            title = registry.CHAPTERS[r.chapter].title if r.chapter in registry.CHAPTERS else r.chapter
            outcome = r.outcome if r.outcome == "ok" else f"**{r.outcome}**: {_cell(r.error)}"
            wall = f"{r.wall_s:.0f} s" if r.wall_s is not None else "—"
            lines.append(f"| {_cell(r.chapter)} ({_cell(title)}) | {_cell(r.run)} | {outcome} | {wall} | "
                         f"`{_cell(r.commit)}` | {_cell(r.date).replace('T', ' ').replace('+00:00', '')} | "
                         f"{r.n_runs} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_page(root: str | os.PathLike) -> Path:
    """Write :func:`page` to ``<root>/book/_generated/status.md`` (atomically) and return its path."""
    out = Path(root) / "book" / "_generated" / "status.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".status.md.tmp{os.getpid()}")
    tmp.write_text(page())
    os.replace(tmp, out)
    return out
