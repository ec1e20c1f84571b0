"""The execution-status page is built from the runner's log: outcome, wall time, commit, date."""
import json

import pytest

from coft_utils.book import run, status


def test_log_keeps_the_last_run_of_each_chapter_profile_and_run(tmp_runs):
    status.log("03_fixed_lr_finetuning", "smoke", {"seed": 0, "overrides": {}}, "failed", 3.0, "cell 4: ValueError: x")
    status.log("03_fixed_lr_finetuning", "smoke", {"seed": 0, "overrides": {}}, "ok", 12.3)
    status.log("03_fixed_lr_finetuning", "smoke", {"seed": 1, "overrides": {}}, "ok", 11.0)
    status.log("02_gaussian_sensitivity", "cpu", {"overrides": {"gammas": [1000.0]}}, "failed", 5.0,
               "cell 7: OverflowError: boom\nmore lines")
    with open(status.log_path(), "a") as fh:
        fh.write("{not json\n")  # a torn or foreign line is skipped, not fatal
    df = status.last_runs()
    assert len(df) == 3
    pre = df[(df.chapter == "03_fixed_lr_finetuning") & (df.run == "preset")].iloc[0]
    assert pre.outcome == "ok" and pre.wall_s == 12.3 and pre.n_runs == 2
    assert set(df.run) == {"preset", "seed 1", "gammas=[1000.0]"}
    md = status.page()
    assert "## Profile `smoke`" in md and "## Profile `cpu`" in md
    assert "**failed**: cell 7: OverflowError: boom |" in md  # first line of the error only
    commit = json.loads(status.log_path().read_text().splitlines()[0])["commit"]
    assert commit[:10] in md
    with pytest.raises(ValueError, match="outcome"):
        status.log("03_fixed_lr_finetuning", "smoke", {}, "maybe", 1.0)


def test_empty_log_says_so_and_the_page_is_written(tmp_runs, tmp_path):
    assert status.last_runs().empty
    out = status.write_page(tmp_path)
    assert out == tmp_path / "book" / "_generated" / "status.md"
    assert "No chapter has been run" in out.read_text()


def test_the_runner_logs_ok_and_failed_runs(tmp_runs, tmp_path):
    import jupytext
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text("# %% tags=[\"parameters\"]\nprofile = \"smoke\"\n\n# %%\nx = 1\n")
    bad.write_text("# %% tags=[\"parameters\"]\nprofile = \"smoke\"\n\n# %%\nraise ValueError(\"no good\")\n")
    assert jupytext.read(good)
    run.run_notebook(str(good), "smoke", out_dir=tmp_path / "out", force=True, progress=False)
    with pytest.raises(run.RunError):
        run.run_notebook(str(bad), "smoke", out_dir=tmp_path / "out", force=True, progress=False)
    e = {x["chapter"]: x for x in status.entries()}
    assert e["good"]["outcome"] == "ok" and e["good"]["wall_s"] >= 0
    assert e["bad"]["outcome"] == "failed" and "ValueError: no good" in e["bad"]["error"]
