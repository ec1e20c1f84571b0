"""The claims page: verdicts with statistic, CI, replicates and method; no typed-in rows."""
import numpy as np
import pytest

from coft_utils import calibration, claims, results, verdicts


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("COFT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(claims, "REFERENCE_DIR", tmp_path / "none")
    return tmp_path / "runs"


def test_record_a_verdict_and_show_it(runs):
    y = calibration._noisy(np.random.default_rng(0), calibration.U_02, 5, 0.01)
    v = verdicts.u_shape(calibration.TOKENS, y)
    claims.record("ushape_noise_init", "smoke", v, "synthetic U", chapter="02_gaussian_sensitivity")
    rec = claims.collect()[0]
    assert rec["verdict"] == v.label == "observed" and rec["n_replicates"] == 5
    assert "CI" in rec["statistic"] and "re-selected" in rec["method"]
    t = claims.table()
    row = t[t.claim == claims.CLAIMS["ushape_noise_init"].text].iloc[0]
    assert row["smoke: verdict"] == "observed" and "CI" in row["smoke: statistic"]
    assert (t[t.claim != row.claim]["smoke: verdict"] == "not run").all()
    html = claims.html_table()
    assert "observed" in html and 'href="02_gaussian_sensitivity.html#verdict"' in html
    assert verdicts.COLORS["observed"] in html


def test_bad_labels_and_claims_are_refused(runs):
    with pytest.raises(ValueError, match="unknown verdict 'partly observed'"):
        claims.record("base_improves", "smoke", "partly observed", "x")
    with pytest.raises(ValueError, match="unknown claim"):
        claims.record("nope", "smoke", "observed", "x")


def test_old_or_foreign_records_are_skipped(runs):
    store = results.Store("claims", "smoke")
    store.write({"claim": "ushape_noise"}, {"verdict": "partly observed", "measured": "old"})  # a retired claim id
    store.write({"experiment": "x"}, {"val": 1.0})  # not a claim record at all
    assert claims.collect() == []
    assert "not run" in claims.html_table() or "verdict" in claims.html_table()


def test_every_claim_has_a_chapter_notebook():
    from coft_utils import run
    assert {c.chapter for c in claims.CLAIMS.values()} <= set(run.chapters())
