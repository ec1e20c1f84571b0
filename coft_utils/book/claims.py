"""The paper's claims, and what each chapter measured about them at each profile.

Every chapter states its verdict on the claims it tests with :func:`record`; the claims page
(``notebooks/99_claims.py``) collects them across profiles into one table, so no row of that
table is typed in::

    from coft_utils.book import claims
    v = verdicts.u_shape(tokens, ppl_per_seed)             # a coft_utils.foundation.verdicts.Verdict
    claims.record("ushape_noise_init", "cpu", v, measured="perturbed ppl, gamma=3.2, init scale",
                  chapter="02_gaussian_sensitivity")
    claims.table()        # DataFrame: one row per claim, one column per profile run

Verdicts are :class:`coft_utils.foundation.verdicts.Verdict` objects (label, statistic, CI, replicates,
method), their labels one of :data:`VERDICTS`. Records are results-store records (atomic, with
provenance) under ``runs/<profile>/claims/``; reference records from ``gpu``/``paper`` runs on
other machines may be committed under ``results/<profile>/claims/`` and are labelled as such.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from ..foundation import depth as depth_mod
from ..foundation import profiles, registry, results, verdicts

VERDICTS = verdicts.LABELS


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    paper: str  # where the paper shows it
    model: str = ""  # a row about one model (a series name): no cell from another series

    def measures(self, series: str | None) -> bool:
        """Can a verdict measured on ``series`` fill this row? (Always, unless the row names a model.)"""
        return not self.model or (series is not None and self.model.lower() in str(series).lower())

    @property
    def chapter(self) -> str:
        """The chapter that tests it (from the chapter registry)."""
        return registry.chapter_of(self.id)


CLAIMS: dict[str, Claim] = {c.id: c for c in (
    Claim("base_improves", "Base models improve with more pre-training tokens",
          "Fig. 1 (base curves); §3.2"),
    Claim("olmo_instruction", "OLMo-1B: after instruction tuning the last (3T-token) checkpoint is worse than an "
          "earlier one (2.3T), while the base model keeps improving",
          "Figs. 1-2", model="olmo-1b"),
    Claim("cpu_general_ability", "Small-model stand-in for the paper's benchmarks (this companion's general-ability "
          "panel: minimal pairs and LAMBADA through lm-eval, pre-training-domain and WikiText-2 perplexity): after "
          "instruction tuning the last checkpoint is worse than an earlier one while the base model does not bend down",
          "Figs. 1-2 (the paper's OLMo-1B statements; the panel itself is not in the paper)"),
    Claim("sensitivity_noise_init", "Progressive sensitivity, fixed-size noise (initialization scale): the damage "
          "of the same Gaussian perturbation grows with pre-training tokens",
          "Fig. 3 (left)"),
    Claim("ushape_noise_init", "Catastrophic overtraining under fixed-size noise (initialization scale): perturbed "
          "perplexity is U-shaped in tokens", "Fig. 3 (right)"),
    Claim("sensitivity_noise_empirical", "Progressive sensitivity, weight-relative noise (each tensor's own std, "
          "which grows with the weights): the damage grows with tokens",
          "Pythia-70M reproduction report"),
    Claim("ushape_noise_empirical", "Weight-relative noise: perturbed perplexity is U-shaped in tokens",
          "Pythia-70M reproduction report"),
    Claim("forgetting_grows", "At a fixed fine-tuning learning rate, pre-training-domain forgetting grows with tokens",
          "Figs. 4-5"),
    Claim("ushape_fixed_lr", "At a fixed fine-tuning learning rate, pre-training-domain perplexity after "
          "fine-tuning is U-shaped in tokens (an inflection point)", "Figs. 4-5"),
    Claim("earlier_larger_lr", "Larger fine-tuning learning rates reach the inflection point with fewer tokens",
          "Figs. 4-5"),
    Claim("lr_tuning_later", "Tuning the learning rate for in-distribution performance moves the inflection point "
          "later", "Fig. 6"),
    Claim("lr_tuning_remains", "Tuning the learning rate does not remove the inflection point (the perplexity "
          "after fine-tuning at the tuned rate is still U-shaped)", "Fig. 6"),
    Claim("linear_incremental", "Linear model: gradient flow learns the target's singular directions one at a time, largest first",
          "§4"),
    Claim("linear_ushape", "Linear model: progressive sensitivity and a U-shape of the perturbed and fine-tuned pre-training loss",
          "§4"),
    Claim("linear_regularization", "Linear model: regularizing fine-tuning toward the pre-trained weights delays the inflection point at a cost in fine-tuning loss",
          "Theorem 4.7"),
    Claim("anneal_sensitivity", "Beyond the paper: at equal tokens, annealed checkpoints (WSD: the LR decayed to "
          "zero) are more sensitive to Gaussian noise than un-annealed ones (the same constant-LR trunk)",
          "not in the paper; arXiv 2603.16127, 2605.02105"),
    Claim("anneal_forgetting", "Beyond the paper: at equal tokens and a fixed fine-tuning LR, annealed (WSD) "
          "checkpoints forget more than un-annealed (constant-LR) ones", "not in the paper; arXiv 2603.16127"),
    Claim("short_anneal", "Beyond the paper: a long anneal makes a checkpoint more sensitive (noise) or forget more "
          "(fine-tuning) than a short anneal off the same trunk", "not in the paper; arXiv 2605.02105"),
    Claim("anneal_inflection", "Beyond the paper: longer annealing moves the inflection point (the minimum over "
          "tokens of the perturbed or fine-tuned pre-training-domain perplexity) earlier",
          "not in the paper; arXiv 2603.16127, 2605.02105"),
    Claim("l2_forgetting", "Language models: fine-tuning with an L2 penalty toward the pre-trained weights forgets "
          "less than unregularized fine-tuning at the same LR", "Theorem 4.7 (linear model only)"),
    Claim("l2_inflection", "Language models: the L2 penalty toward the pre-trained weights moves the inflection "
          "point later", "Theorem 4.7 (linear model only)"),
    Claim("lr_rule", "Beyond the paper: lowering the fine-tuning LR with tokens (to hold forgetting at the first "
          "checkpoint's level) forgets less at the later checkpoints than the ID-optimal LR",
          "not in the paper; arXiv 2604.13627"),
)}

REFERENCE_DIR = results.REPO_ROOT / "results"


def record_ids(records) -> list[str]:
    """The sorted, distinct ids of the results records behind a verdict, from record or unit
    dicts, id strings, or a DataFrame with a ``record_id`` column (as the chapters' frames have)."""
    if records is None:
        return []
    if hasattr(records, "columns"):
        if "record_id" not in records.columns:
            raise ValueError("a frame of records needs a 'record_id' column")
        records = records["record_id"].tolist()
    out = set()
    for r in records:
        if isinstance(r, str):
            out.add(r)
        elif isinstance(r, dict):
            out.add(results.unit_id(r["unit"]) if "unit" in r and "metrics" in r else results.unit_id(r))
        else:
            raise TypeError(f"a record must be an id, a record or a unit dict; got {type(r).__name__}")
    return sorted(out)


def record(claim_id: str, profile: str, verdict, measured: str, numbers: dict | None = None,
           chapter: str | None = None, config=None, records=None, depth=None) -> dict:
    """Store a chapter's verdict on one claim at one profile.

    The run at the profile's preset and seed 0 is the profile's row (a rerun replaces it). A run
    with another seed is kept beside it as its own column (``cpu (seed 1)``); a run with
    overridden parameters (``config`` differs from the preset beyond ``workers``/``threads``) is
    kept apart and listed under the table, never shown as the profile's verdict.

    ``verdict`` is a :class:`coft_utils.foundation.verdicts.Verdict` (its label, statistic, CI, replicates
    and method are stored) or, for exact (deterministic) results, one of :data:`VERDICTS`.

    The record carries the hash of the full resolved ``config`` (``config_hash``) and the ids of
    the results records the verdict was computed from (``records``: see :func:`record_ids`),
    with a hash of that list (``records_hash``), so a verdict can be traced to its inputs.
    ``depth`` (a :class:`coft_utils.foundation.depth.Depth`) says how deep the measured series
    went: tokens per parameter, with and without embeddings, shown beside the verdict."""
    if claim_id not in CLAIMS:
        raise ValueError(f"unknown claim {claim_id!r}; allowed: {', '.join(CLAIMS)}")
    if isinstance(verdict, verdicts.Verdict):
        v = verdict.to_dict()
        label = verdict.label
        stat = verdict.stat_text() if math.isfinite(verdict.statistic) else ""
        design, mde = verdict.design, verdict.mde_text()
    else:
        label, v, stat, design, mde = verdict, None, "", "", ""
    if label not in VERDICTS:
        raise ValueError(f"unknown verdict {label!r}; allowed: {', '.join(VERDICTS)}")
    profiles.get_profile(profile)
    store = results.Store("claims", profile)
    chapter = chapter or CLAIMS[claim_id].chapter
    seed, changed = run_identity(chapter, profile, config)
    unit = {"claim": claim_id}
    if seed or changed:  # another seed or overridden parameters: a run of its own, never the profile's row
        unit.update(seed=seed, overrides=results.config_hash(changed, 10) if changed else "")
    ids = record_ids(records)
    cfg_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    return store.write(unit, {"verdict": label, "measured": measured, "statistic": stat,
                              "series": series_name(config), "design": design, "mde": mde,
                              "depth": depth_mod.to_record(depth),
                              "seed": seed, "overrides": changed,
                              "config_hash": results.config_hash(cfg_dict) if config is not None else None,
                              "records": ids, "records_hash": results.config_hash(ids) if ids else None,
                                             "n_replicates": v["n_replicates"] if v else None,
                                             "method": v["method"] if v else "exact (deterministic computation)",
                                             "test": v or {}, "numbers": numbers or {},
                                             "chapter": chapter},
                       config=config)


def series_name(config) -> str | None:
    """The checkpoint series a chapter's run measured (``suite (cosine)``, ``olmo-1b``, a file), or None."""
    name = getattr(config, "series", None)
    if not name:
        return None
    sched = getattr(config, "schedule", "")
    return f"{name} ({sched})" if name == "suite" and sched else str(name)


# parameters that do not change what a run measures (how it is scheduled, not what it computes)
_RUNTIME_FIELDS = ("profile", "seed", "workers", "threads")


def run_identity(chapter: str, profile: str, config) -> tuple[int, dict]:
    """(seed, parameters that differ from the profile's preset) of the run behind a record."""
    if config is None:
        return 0, {}
    seed = int(getattr(config, "seed", 0) or 0)
    try:
        preset = profiles.preset(chapter, profile)
    except (profiles.ProfileError, KeyError):
        return seed, {}
    a, b = config.to_dict(), preset.to_dict()
    changed = {k: a[k] for k in a if k not in _RUNTIME_FIELDS and a.get(k) != b.get(k)}
    ser = a.get("series")
    if isinstance(ser, str) and ser.endswith((".json", ".yaml", ".yml")) and Path(ser).is_file():
        # a user's series file: its content, not its path, names the run (an edited file at the
        # same path is another run, kept beside the earlier one)
        import hashlib
        changed["series_content"] = hashlib.sha256(Path(ser).read_bytes()).hexdigest()[:16]
    return seed, changed


def collect() -> list[dict]:
    """Every claim record: this machine's runs, then committed reference results (records of
    claims this version no longer has are skipped)."""
    out = []
    for source, root in (("this machine", results.runs_dir()), ("reference (committed)", REFERENCE_DIR)):
        for prof in profiles.PROFILES:
            d = Path(root) / prof / "claims"
            for r in results.Store("claims", prof, root=d).records():
                cid = r.get("unit", {}).get("claim")
                if cid not in CLAIMS or "verdict" not in r.get("metrics", {}):
                    continue
                m = {"seed": 0, "overrides": {}, **r["metrics"]}
                tag = prof + (f" (seed {m['seed']})" if m["seed"] else "") + \
                    ("" if source == "this machine" else " (reference run)")
                out.append({"claim": cid, "profile": prof, "source": source, "tag": tag,
                            "time": r.get("time"), "commit": r.get("git", {}).get("commit", "")[:10], **m})
    return out


def _columns(recs) -> list[str]:
    """Column tags of the table: preset runs only (no overridden parameters), in profile order,
    seed 0 first, then other seeds, then committed reference results."""
    tags = {(list(profiles.PROFILES).index(r["profile"]), r["source"] != "this machine", r["seed"]): r["tag"]
            for r in recs if not r["overrides"]}
    return [tags[k] for k in sorted(tags)]


def overridden(recs=None) -> list[dict]:
    """Records of runs with overridden parameters (kept apart from the profile's rows)."""
    return [r for r in (collect() if recs is None else recs) if r["overrides"]]


def table():
    """One row per claim; per preset run (profile, seed): verdict, statistic with CI, measured."""
    import pandas as pd
    recs = [r for r in collect() if not r["overrides"]]
    cols = _columns(recs)
    rows = []
    for c in CLAIMS.values():
        row = {"claim": c.text, "paper": c.paper, "chapter": c.chapter}
        for r in recs:
            if r["claim"] == c.id and not c.measures(r.get("series")):
                row[f"{r['tag']}: verdict"] = f"not measured on {c.model}"
                row[f"{r['tag']}: measured"] = f"this run used {r.get('series')}"
            elif r["claim"] == c.id:
                row[f"{r['tag']}: verdict"] = r["verdict"]
                row[f"{r['tag']}: design"] = r.get("design", "")
                row[f"{r['tag']}: tokens/param"] = depth_text(r.get("depth"))
                row[f"{r['tag']}: smallest detectable"] = r.get("mde", "")
                row[f"{r['tag']}: statistic"] = r.get("statistic", "")
                row[f"{r['tag']}: measured"] = r["measured"]
        rows.append(row)
    df = pd.DataFrame(rows)
    order = ["claim", "paper", "chapter"] + [f"{t}: {k}" for t in cols
                                             for k in ("verdict", "statistic", "design", "tokens/param",
                                                       "smallest detectable", "measured")
                                             if f"{t}: {k}" in df]
    return df[order].fillna("not run")


def depth_text(d: dict | None) -> str:
    """A record's depth in a cell: "512 tokens/param (1,024 without embeddings) at 32M", or ""."""
    if not d:
        return ""
    from ..foundation.plots import fmt_tokens
    return (f"{d['tpp']:,.0f} tokens/param ({d['tpp_non_emb']:,.0f} without embeddings) at "
            f"{fmt_tokens(d['tokens'])} tokens")


def badge(label: str) -> str:
    """A coloured verdict label (HTML) for tables and chapter pages."""
    color = verdicts.COLORS.get(label, "#6e7781")
    return (f'<span style="background:{color};color:white;border-radius:0.6em;padding:0.1em 0.6em;'
            f'white-space:nowrap;font-weight:600">{html.escape(label)}</span>')


def html_table(profile: str | None = None) -> str:
    """The claims page's table: one row per claim, a coloured verdict per preset run (profile,
    and seed when it is not 0), the statistic with its CI and replicates, the method, and a
    link to the chapter's verdict. Runs with overridden parameters are not in it."""
    recs = [r for r in collect() if not r["overrides"]]
    cols = _columns(recs)
    if profile is not None:
        cols = [t for t in cols if t.split(" ")[0] == profile] or cols
    head = "".join(f"<th>{html.escape(t)}</th>" for t in cols) or "<th>verdict</th>"
    out = ['<table class="coft-claims"><thead><tr><th>claim</th><th>paper</th>', head,
           "<th>chapter</th></tr></thead><tbody>"]
    for c in CLAIMS.values():
        cells = []
        for t in cols or [None]:
            rs = [r for r in recs if r["claim"] == c.id and r["tag"] == t]
            if not rs:
                cells.append("<td>not run</td>")
                continue
            r = rs[0]
            if not c.measures(r.get("series")):
                cells.append(f"<td>not measured on {html.escape(c.model)}<br><small>this run used "
                             f"{html.escape(str(r.get('series') or 'another series'))}: see the stand-in row"
                             "</small></td>")
                continue
            src = "" if r["source"] == "this machine" else " <em>(reference run)</em>"
            stat = html.escape(r.get("statistic") or "")
            n = r.get("n_replicates")
            extra = "".join(f"<br><small><em>{k}:</em> {html.escape(str(r.get(f) or ''))}</small>"
                            for k, f in (("series", "series"), ("design", "design"), ("could see", "mde"))
                            if r.get(f))
            if r.get("depth"):
                extra += f"<br><small><em>depth:</em> {html.escape(depth_text(r['depth']))}</small>"
            cells.append(f"<td>{badge(r['verdict'])}{src}<br><small>{stat}</small>{extra}"
                         f"<details><summary><small>what was measured{f', {n} replicates' if n else ''}"
                         f"</small></summary><small>{html.escape(r['measured'])}<br><em>method:</em> "
                         f"{html.escape(r.get('method') or '')}</small></details></td>")
        link = f'<a href="{c.chapter}.html#verdict">{html.escape(c.chapter)}</a>'
        out.append(f"<tr><td>{html.escape(c.text)}</td><td>{html.escape(c.paper)}</td>{''.join(cells)}"
                   f"<td>{link}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


@dataclass(frozen=True)
class Config(profiles.ChapterConfig):
    """The claims page has no parameters of its own: it reads what the chapters recorded."""


PRESETS = {p: Config(profile=p) for p in profiles.PROFILES}
