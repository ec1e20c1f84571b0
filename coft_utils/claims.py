"""The paper's claims, and what each chapter measured about them at each profile.

Every chapter states its verdict on the claims it tests with :func:`record`; the claims page
(``notebooks/99_claims.py``) collects them across profiles into one table, so no row of that
table is typed in::

    from coft_utils import claims
    claims.record("ushape_noise", "cpu", verdict="observed",
                  measured="perturbed ppl minimum at 2M of 0.25M-8M tokens (gamma=0.05)",
                  numbers={"argmin_tokens": 2e6}, chapter="02_gaussian_sensitivity")
    claims.table()        # DataFrame: one row per claim, one column per profile run

Verdicts are one of :data:`VERDICTS`. Records are results-store records (atomic, with
provenance) under ``runs/<profile>/claims/``; reference records from ``gpu``/``paper`` runs on
other machines may be committed under ``results/<profile>/claims/`` and are labelled as such.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import profiles, results

VERDICTS = ("observed", "partly observed", "not observed", "contradicted", "inconclusive")


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    paper: str  # where the paper shows it
    chapter: str  # the chapter that tests it


CLAIMS: dict[str, Claim] = {c.id: c for c in (
    Claim("base_improves", "Base models improve with more pre-training tokens",
          "Fig. 1 (base curves); §3.2", "00_pretraining_suite"),
    Claim("sensitivity_noise", "Progressive sensitivity: the damage of fixed-size Gaussian noise grows with pre-training tokens",
          "Fig. 3 (left)", "02_gaussian_sensitivity"),
    Claim("ushape_noise", "Catastrophic overtraining under noise: perturbed perplexity is U-shaped in tokens",
          "Fig. 3 (right)", "02_gaussian_sensitivity"),
    Claim("forgetting_fixed_lr", "At a fixed fine-tuning learning rate, pre-training-domain forgetting grows with tokens; larger learning rates turn earlier",
          "Figs. 4-5", "03_fixed_lr_finetuning"),
    Claim("lr_tuning", "Tuning the learning rate for in-distribution performance shifts the inflection point but does not remove it",
          "Fig. 6", "04_lr_sweep"),
    Claim("linear_incremental", "Linear model: gradient flow learns the target's singular directions one at a time, largest first",
          "§4", "05_linear_theory"),
    Claim("linear_ushape", "Linear model: progressive sensitivity and a U-shape of the perturbed and fine-tuned pre-training loss",
          "§4", "05_linear_theory"),
    Claim("linear_regularization", "Linear model: regularizing fine-tuning toward the pre-trained weights delays the inflection point at a cost in fine-tuning loss",
          "Theorem 4.7", "05_linear_theory"),
    Claim("olmo_instruction", "OLMo-1B: the 3T-token checkpoint is worse after instruction tuning than the 2.3T one",
          "Figs. 1-2", "01_instruction_tuning"),
)}

REFERENCE_DIR = results.REPO_ROOT / "results"


def record(claim_id: str, profile: str, verdict: str, measured: str, numbers: dict | None = None,
           chapter: str | None = None, config=None) -> dict:
    """Store a chapter's verdict on one claim at one profile (replaces an earlier one)."""
    if claim_id not in CLAIMS:
        raise ValueError(f"unknown claim {claim_id!r}; allowed: {', '.join(CLAIMS)}")
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}; allowed: {', '.join(VERDICTS)}")
    profiles.get_profile(profile)
    store = results.Store("claims", profile)
    return store.write({"claim": claim_id}, {"verdict": verdict, "measured": measured,
                                             "numbers": numbers or {},
                                             "chapter": chapter or CLAIMS[claim_id].chapter},
                       config=config)


def collect() -> list[dict]:
    """Every claim record: this machine's runs, then committed reference results."""
    out = []
    for source, root in (("this machine", results.runs_dir()), ("reference (committed)", REFERENCE_DIR)):
        for prof in profiles.PROFILES:
            d = Path(root) / prof / "claims"
            for r in results.Store("claims", prof, root=d).records():
                out.append({"claim": r["unit"]["claim"], "profile": prof, "source": source,
                            "time": r.get("time"), "commit": r.get("git", {}).get("commit", "")[:10],
                            **r["metrics"]})
    return out


def table():
    """One row per claim; per profile run: verdict and what was measured."""
    import pandas as pd
    recs = collect()
    rows = []
    for c in CLAIMS.values():
        row = {"claim": c.text, "paper": c.paper, "chapter": c.chapter}
        for r in recs:
            if r["claim"] != c.id:
                continue
            tag = r["profile"] + ("" if r["source"] == "this machine" else " (reference)")
            row[f"{tag}: verdict"] = r["verdict"]
            row[f"{tag}: measured"] = r["measured"]
        rows.append(row)
    df = pd.DataFrame(rows)
    order = ["claim", "paper", "chapter"]
    for p in profiles.PROFILES:
        for tag in (p, p + " (reference)"):
            for k in ("verdict", "measured"):
                if f"{tag}: {k}" in df:
                    order.append(f"{tag}: {k}")
    return df[order].fillna("not run")


@dataclass(frozen=True)
class Config(profiles.ChapterConfig):
    """The claims page has no parameters of its own: it reads what the chapters recorded."""


PRESETS = {p: Config(profile=p) for p in profiles.PROFILES}
