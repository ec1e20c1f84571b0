"""Reference runs: a profile's records copied into ``results/<profile>/`` with their provenance.

A *reference* profile (``profiles.Profile.reference``: ``cpu-deep``) is a run too long for every
book. ``make book PROFILE=cpu-deep`` runs its chapters (``Profile.chapters``) into
``runs/<profile>/`` as usual, writes the executed notebooks to ``runs/<profile>/_generated/``
(the site keeps the cpu pages), then calls :func:`export`, which writes what is committed::

    results/<profile>/claims/<id>.json         every claim record, whole (config, versions, commit,
                                               data sha256, statistic, CI, design, depth); the
                                               claims page shows them as the "reference run" column
    results/<profile>/records/<store>.csv.gz   one row per unit record of each results store
                                               (unit fields, metrics, record id, commit)
    results/<profile>/suite/<series>.json      each pre-training series' checkpoint records
                                               (tokens, tokens/param, validation perplexity, wall time)
    results/<profile>/PROVENANCE.json          command, commit, package versions, data sha256,
                                               machine, the wall time of every chapter

The export alone, from an existing ``runs/<profile>/``::

    python -m coft_utils.book.reference cpu-deep
"""
from __future__ import annotations

import gzip
import io
import json
import shutil
import sys
from pathlib import Path

from ..foundation import profiles, results

__all__ = ["RESULTS_DIR", "export", "main"]

RESULTS_DIR = results.REPO_ROOT / "results"
_SKIP = ("claims", "_generated", "_submitit")


def _series_records(profile: str) -> dict[str, list[dict]]:
    """{series name: its checkpoint records} of every pre-training suite trained at ``profile``."""
    from ..chapters import pretrain
    out = {}
    for f in sorted((results.runs_dir() / "suite").glob("*/*/series.json")):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if d.get("meta", {}).get("config", {}).get("profile") != profile:
            continue
        out[d["name"]] = [{k: v for k, v in r.items() if k != "path"} for r in pretrain.load_records_dir(f.parent / "ckpt")]
    return out


def export(profile: str, walls: dict | None = None, command: str = "", dest: Path | None = None) -> Path:
    """Write ``results/<profile>/`` (see the module docstring) from ``runs/<profile>/``; returns it.
    ``walls``: seconds per chapter of the run that produced the records."""
    import pandas as pd
    profiles.get_profile(profile)
    src = results.runs_dir() / profile
    if not (src / "claims").is_dir():
        raise FileNotFoundError(f"no claim records under {src / 'claims'}: run `make book PROFILE={profile}` first")
    out = Path(dest) if dest is not None else RESULTS_DIR / profile
    if out.exists():
        shutil.rmtree(out)
    (out / "claims").mkdir(parents=True)
    for f in sorted((src / "claims").glob("*.json")):
        shutil.copyfile(f, out / "claims" / f.name)
    (out / "records").mkdir()
    counts, sha = {}, {}
    for d in sorted(p for p in src.iterdir() if p.is_dir() and p.name not in _SKIP):
        recs = results.Store(d.name, profile, root=d).records()
        for r in recs:
            sha.update(r.get("data_sha256") or {})
        rows = [{**r["unit"], **r["metrics"], "record_id": results.unit_id(r["unit"]),
                 "commit": r.get("git", {}).get("commit", "")[:12], "time": r.get("time")}
                for r in recs]
        if not rows:
            continue
        buf = io.StringIO()
        pd.DataFrame(rows).to_csv(buf, index=False)
        with gzip.GzipFile(out / "records" / f"{d.name}.csv.gz", "wb", mtime=0) as fh:
            fh.write(buf.getvalue().encode())
        counts[d.name] = len(rows)
    (out / "suite").mkdir()
    for name, recs in _series_records(profile).items():
        results.atomic_write_json(out / "suite" / f"{name}.json", recs)
    prov = results.provenance()
    prov.pop("config", None)
    results.atomic_write_json(out / "PROVENANCE.json", {
        "profile": profile, "command": command or f"make book PROFILE={profile}",
        "chapters": list(profiles.get_profile(profile).chapters or []), "wall_s": walls or {},
        "records": counts, **prov, "data_sha256": dict(sorted(sha.items()))})
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m coft_utils.book.reference PROFILE", file=sys.stderr)
        return 2
    try:
        print(f"[coft] reference records written to {export(argv[0])}")
    except (profiles.ProfileError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
