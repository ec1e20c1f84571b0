"""The claims page: verdicts with statistic, CI, replicates and method; no typed-in rows."""
import numpy as np
import pytest

from coft_utils.chapters import calibration
from coft_utils.book import claims
from coft_utils.foundation import results, verdicts
@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("COFT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(claims, "REFERENCE_DIR", tmp_path / "none")
    return tmp_path / "runs"


def test_record_a_verdict_and_show_it(runs):
    y = calibration._noisy(np.random.default_rng(0), calibration.U_PAR, 5, 0.01)
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
    from coft_utils.book import run
    assert {c.chapter for c in claims.CLAIMS.values()} <= set(run.chapters())


def test_other_seeds_get_a_column_and_overrides_never_replace_the_row(runs):
    from coft_utils.foundation import profiles
    g = np.random.default_rng(1)
    u = verdicts.u_shape(calibration.TOKENS, calibration._noisy(g, calibration.U_PAR, 5, 0.01))
    flat = verdicts.u_shape(calibration.TOKENS, calibration._noisy(g, calibration.FLAT, 5, 0.01))
    preset = profiles.resolve("05_linear_theory", "smoke")
    claims.record("linear_ushape", "smoke", u, "preset run", config=preset)
    claims.record("linear_ushape", "smoke", u, "seed 1", config=profiles.resolve("05_linear_theory", "smoke", seed=1))
    claims.record("linear_ushape", "smoke", flat, "an override run",
                  config=profiles.resolve("05_linear_theory", "smoke", {"gammas": [0.5]}))
    # workers/threads are how a run is scheduled, not what it measures
    claims.record("linear_ushape", "smoke", u, "preset, rerun",
                  config=profiles.resolve("05_linear_theory", "smoke"))
    t = claims.table()
    row = t[t.claim == claims.CLAIMS["linear_ushape"].text].iloc[0]
    assert row["smoke: verdict"] == "observed" and row["smoke: measured"] == "preset, rerun"
    assert row["smoke (seed 1): verdict"] == "observed"
    assert "an override run" not in t.to_string()
    ov = claims.overridden()
    assert len(ov) == 1 and ov[0]["overrides"] == {"gammas": [0.5]} and ov[0]["verdict"] == "within noise"
    assert "smoke (seed 1)" in claims.html_table() and "an override run" not in claims.html_table()


def test_a_claim_record_carries_its_config_hash_and_its_records(runs):
    import pandas as pd

    from coft_utils.foundation import profiles, results
    cfg = profiles.resolve("05_linear_theory", "smoke")
    units = [{"checkpoint": c, "seed": s} for c in ("2k", "4k") for s in (0, 1)]
    ids = [results.unit_id(u) for u in units]
    r = claims.record("linear_ushape", "smoke", "observed", "x", config=cfg,
                      records=pd.DataFrame({"record_id": ids + ids[:1]}))  # repeats count once
    m = r["metrics"]
    assert m["config_hash"] == results.config_hash(cfg.to_dict()) and len(m["config_hash"]) == 16
    assert m["records"] == sorted(ids) and m["records_hash"] == results.config_hash(sorted(ids))
    # the same from unit dicts or whole records; another config gives another hash
    assert claims.record_ids(units) == sorted(ids)
    assert claims.record_ids([{"unit": u, "metrics": {}} for u in units]) == sorted(ids)
    other = claims.record("linear_ushape", "smoke", "observed", "y",
                          config=profiles.resolve("05_linear_theory", "smoke", {"gammas": [0.5]}))
    assert other["metrics"]["config_hash"] != m["config_hash"] and other["metrics"]["records"] == []
    with pytest.raises(ValueError, match="record_id"):
        claims.record_ids(pd.DataFrame({"x": [1]}))


def test_a_row_about_one_model_takes_no_cell_from_another_series(runs):
    """The OLMo-1B row: a verdict measured on the project's suite is shown as 'not measured on
    olmo-1b' (with the series it used), never as a verdict on OLMo-1B; every cell names its series
    and design, and says what it could have seen."""
    from coft_utils.foundation import profiles
    cfg = profiles.resolve("01_instruction_tuning", "smoke")
    v = verdicts.rises(calibration.TOKENS, 100 * (1 + 0.01 * np.random.default_rng(3).standard_normal((3, 6))))
    claims.record("olmo_instruction", "smoke", v, "suite run", config=cfg, chapter="01_instruction_tuning")
    claims.record("forgetting_grows", "smoke", v, "suite run", config=cfg, chapter="01_instruction_tuning")
    t = claims.table()
    olmo = t[t.claim == claims.CLAIMS["olmo_instruction"].text].iloc[0]
    assert olmo["smoke: verdict"] == "not measured on olmo-1b" and "suite" in olmo["smoke: measured"]
    other = t[t.claim == claims.CLAIMS["forgetting_grows"].text].iloc[0]
    assert other["smoke: verdict"] == v.label and "one pre-training run" in other["smoke: design"]
    assert "would have detected" in other["smoke: smallest detectable"]
    html = claims.html_table()
    assert "not measured on olmo-1b" in html and "could see" in html and "suite (" in html
    assert claims.CLAIMS["olmo_instruction"].measures("olmo-1b") and not claims.CLAIMS["olmo_instruction"].measures(None)


def test_a_claim_shows_how_deep_its_series_went(runs, tmp_path):
    """A record carries its series' depth (tokens per parameter with and without embeddings, from
    the checkpoint's config.json), and the table and the page show it beside the verdict."""
    import json

    from coft_utils.foundation import depth, models
    folder = tmp_path / "ck"
    folder.mkdir()
    json.dump({"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 128, "vocab_size": 1024,
               "tie_word_embeddings": True}, (folder / "config.json").open("w"))
    s = models.CheckpointSeries("toy", (models.Checkpoint("1M", 2 ** 20, path=str(folder)),
                                        models.Checkpoint("32M", 2 ** 25, path=str(folder))))
    d = depth.of_series(s)
    non_emb = 2 * (4 * 32 * 32 + 3 * 32 * 128)
    assert (d.params, d.params_non_emb) == (non_emb + 1024 * 32, non_emb) == (65536, 32768)
    assert (d.tpp, d.tpp_non_emb, d.tokens_min) == (512.0, 1024.0, 2 ** 20)
    assert "512 tokens per parameter" in depth.text(d) and "1,024 without embeddings" in depth.text(d)
    refs = {r.name: r for r in depth.REFERENCES}
    assert round(refs["OLMo-1B at 3T"].tpp) == round(3e12 / 1_176_764_416)
    assert depth.frame(d).index[0] == "toy" and len(depth.frame(d)) == 1 + len(depth.REFERENCES)
    assert depth.of_series(models.CheckpointSeries("no tokens", (models.Checkpoint("a", 0, path=str(folder)),))) is None
    claims.record("base_improves", "smoke", "observed", "x", depth=d)
    rec = claims.collect()[0]
    assert rec["depth"]["tpp"] == 512.0 and rec["depth"]["tpp_non_emb"] == 1024.0
    row = claims.table().iloc[0]
    assert row["smoke: tokens/param"] == "512 tokens/param (1,024 without embeddings) at 32M tokens"
    assert "512 tokens/param" in claims.html_table()


def test_claims_of_a_user_series_are_keyed_by_its_content_not_its_path(runs, tmp_path):
    import types

    f = tmp_path / "mine.json"
    f.write_text('{"v": 1}')
    cfg = types.SimpleNamespace(seed=0, to_dict=lambda: {**claims.profiles.preset("03_fixed_lr_finetuning", "smoke")
                                                        .to_dict(), "series": str(f)})
    claims.record("ushape_fixed_lr", "smoke", "within noise", "first", chapter="03_fixed_lr_finetuning", config=cfg)
    f.write_text('{"v": 2}')  # edited in place
    claims.record("ushape_fixed_lr", "smoke", "observed", "second", chapter="03_fixed_lr_finetuning", config=cfg)
    recs = claims.overridden()
    assert sorted(r["measured"] for r in recs) == ["first", "second"]
    assert {r["overrides"]["series_content"] for r in recs}.__len__() == 2
