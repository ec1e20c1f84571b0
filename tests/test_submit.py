"""``python -m coft_utils submit``: a chapter's units as a submitit job array (local executor here).

The array test runs chapter 02 at ``smoke`` on a file series of two tiny local OLMo folders
(no suite to train) as 2 array jobs: one job is killed after its first record (``os._exit``,
like SIGKILL) and resubmitted by the driver, the other is preempted after its first record
(submitit's own preemption signal) and requeued by submitit through ``SliceJob.checkpoint``.
The records then equal those of an uninterrupted run in another store, and a full compute
afterwards writes nothing.
"""
from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from coft_utils.book import run, submit
from coft_utils.foundation import profiles, results

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import hubcache  # noqa: E402

CH = "02_gaussian_sensitivity"


@pytest.fixture
def env(tmp_path, monkeypatch):
    for k, v in {"COFT_RUNS_DIR": tmp_path / "runs", "COFT_CACHE_DIR": tmp_path / "cache",
                 "HF_HUB_CACHE": tmp_path / "hub", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                 "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(k, str(v))
    (tmp_path / "hub").mkdir()
    monkeypatch.delenv(submit.FAULT_ENV, raising=False)
    return tmp_path


def _series_file(tmp: Path, n: int = 4) -> Path:
    from coft_utils.foundation import data, models
    tok = models.train_tokenizer(data.gutenberg_bodies("validation", max_chars=40_000), 300)
    cks = []
    for i in range(n):
        d = hubcache.tiny_olmo(tmp / f"m{i}", seed=i, tokenizer=tok, max_len=64)
        cks.append({"label": f"c{i}", "tokens": float(1000 * 2 ** i), "path": str(d)})
    f = tmp / "series.json"
    f.write_text(json.dumps({"name": "tiny-local", "checkpoints": cks}))
    return f


def _records(store_dir: Path) -> dict:
    out = {}
    for p in sorted(store_dir.glob("*.json")):
        r = json.loads(p.read_text())
        out[p.name] = (r["unit"], {k: v for k, v in r["metrics"].items() if not k.endswith("_s")})  # not timings
    return out


def test_array_with_a_killed_and_a_preempted_job_ends_like_an_uninterrupted_run(env, monkeypatch):
    series = _series_file(env, 2)
    over = {"series": str(series), "sources": ["gutenberg"], "gammas": [0.2, 0.8], "compare_gammas": [],
            "n_seeds": 2, "n_blocks": 4, "seq_len": 32, "batch_size": 4, "threads": 1, "workers": 1}
    kill, pre = env / "fault-kill", env / "fault-preempt"
    monkeypatch.setenv(submit.FAULT_ENV, json.dumps([
        {"item": "ck c0", "after": 1, "kind": "kill", "marker": str(kill)},
        {"item": "ck c1", "after": 1, "kind": "preempt", "marker": str(pre)}]))
    out = submit.submit(CH, "smoke", over, executor="local", slices=2, folder=env / "submitit", retries=1,
                        timeout_min=10)
    assert [[it["label"] for it in s] for s in out["slices"]] == [["ck c0"], ["ck c1"]]
    assert kill.is_file() and pre.is_file()  # both faults happened mid-way (after 1 of 5 records)
    assert out["failed"] == [] and len(out["resubmitted"]) == 1  # the killed slice, resubmitted once
    assert len(out["jobs"]) == 3
    attempts = {tuple(r["items"]): r["attempts"] for r in out["results"]}
    assert attempts[("ck c1",)] == 2  # preempted, requeued by submitit (checkpoint), resumed
    store = results.Store(perturb_exp(), "smoke")
    got = _records(store.dir)
    units_per_ck = 1 + 2 * 2  # gamma 0 + 2 gammas x 2 noise seeds, one source
    assert len(got) == 2 * units_per_ck

    # the same sweep, uninterrupted, in another store
    from coft_utils.chapters import perturb
    cfg = profiles.resolve(CH, "smoke", over)
    monkeypatch.setenv("COFT_RUNS_DIR", str(env / "runs_ref"))
    perturb.sweep(perturb.load_series(cfg), cfg, progress=False)
    ref = _records(results.Store(perturb_exp(), "smoke").dir)
    assert got == ref  # same unit ids, same units, same metric values

    # afterwards a full compute (what the notebook's first cell calls) creates no record
    monkeypatch.setenv("COFT_RUNS_DIR", str(env / "runs"))
    before = {p.name: p.stat().st_mtime_ns for p in store.dir.glob("*.json")}
    perturb.sweep(perturb.load_series(cfg), cfg, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in store.dir.glob("*.json")} == before


def perturb_exp() -> str:
    from coft_utils.chapters import perturb
    return perturb.EXPERIMENT


def test_chapters_on_an_unbuilt_suite_are_refused_before_anything_is_submitted(env):
    with pytest.raises(submit.SubmitError, match="not built yet.*submit 00_pretraining_suite --profile smoke"):
        submit.submit("03_fixed_lr_finetuning", "smoke", {}, executor="local", folder=env / "s")
    assert not (env / "s").exists()


def test_work_items_and_dry_run(env, capsys):
    cfg = profiles.resolve("00_pretraining_suite", "smoke")
    items = submit.work_items("00_pretraining_suite", cfg)
    labels = [it["label"] for it in items]
    assert sum(l.startswith("cosine-") for l in labels) == cfg.n_budgets
    trunk = [it for it in items if it["label"].startswith("trunk+wsd")]
    assert trunk and {"trunk", "wsd-decay-2k"} <= set(trunk[0]["jobs"])  # branches with their trunk
    out = submit.submit("00_pretraining_suite", "smoke", {}, executor="local", slices=3, dry_run=True,
                        folder=env / "s")
    assert len(out["slices"]) == 3 and sum(len(s) for s in out["slices"]) == len(items)
    assert out["jobs"] == [] and not (env / "s").exists()
    # balanced by the plan's FLOPs: the slice with the largest cosine run holds nothing else heavy
    big = [s for s in out["slices"] if any(it["label"] == labels[cfg.n_budgets - 1] for it in s)][0]
    assert len(big) <= 2
    assert submit.split([{"label": str(i)} for i in range(5)], 2) == [[{"label": "0"}, {"label": "2"},
                                                                      {"label": "4"}],
                                                                     [{"label": "1"}, {"label": "3"}]]
    with pytest.raises(submit.SubmitError, match="--slices must be an integer >= 1"):
        submit.split([{"label": "a"}], 0)


def _fake_preflight(monkeypatch, calls):
    mod = types.ModuleType("coft_utils.foundation.preflight")

    class PreflightError(ValueError):
        pass

    def check_config(cfg, **kw):
        calls.append(cfg)
        raise PreflightError("allenai/OLMo-1B-hf: revision step1-tokens0B is missing; "
                             "checkpoints 42B and 168B share weights")
    mod.PreflightError, mod.check_config = PreflightError, check_config
    import coft_utils.foundation as fnd
    monkeypatch.setitem(sys.modules, "coft_utils.foundation.preflight", mod)
    monkeypatch.setattr(fnd, "preflight", mod, raising=False)


def test_preflight_runs_before_a_paper_kernel_and_before_a_submission(env, monkeypatch, capsys):
    calls = []
    _fake_preflight(monkeypatch, calls)
    import papermill
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a kernel was started"))
    with pytest.raises(run.RunError, match="pre-flight failed, nothing was run: .*step1-tokens0B"):
        run.run_notebook(CH, "paper", {"series": "olmo-1b"}, out_dir=env / "nb", force=True)
    assert calls and calls[-1].series == "olmo-1b"
    rc = run.main(["run", CH, "--profile", "paper", "-p", "series", "olmo-1b", "--out", str(env / "nb"), "--force"])
    assert rc == 1 and "pre-flight failed" in capsys.readouterr().err
    with pytest.raises(submit.SubmitError, match="pre-flight failed.*share weights"):
        submit.submit(CH, "paper", {"series": "olmo-1b"}, executor="local", folder=env / "s")
    assert not (env / "s").exists()
    # smoke / cpu: no pre-flight
    n = len(calls)
    run.preflight(profiles.resolve(CH, "smoke"))
    assert len(calls) == n


def test_chapter_00_slice_trains_only_its_jobs_and_assembles_no_series(env, monkeypatch):
    """The 00 adapter restricts ``train_suites`` to the slice's jobs, with ``budgets=n_budgets``
    (no series.json from a part); the module's ``plan`` is restored afterwards."""
    from coft_utils.chapters import pretrain
    seen = {}

    def fake_train_suites(cfgs, budgets=None, progress=True, **kw):
        seen["budgets"] = budgets
        seen["jobs"] = {c.schedule: [j.name for j in pretrain.plan(c, budgets)] for c in cfgs}
        return {}
    monkeypatch.setattr(pretrain, "train_suites", fake_train_suites)
    orig = pretrain.plan
    cfg = profiles.resolve("00_pretraining_suite", "smoke")
    items = [it for it in submit.work_items("00_pretraining_suite", cfg)
             if it["label"] in ("cosine-4k", "cosine-8k")]
    assert len(items) == 2
    submit.run_slice("00_pretraining_suite", "smoke", {}, None, items)
    assert seen == {"budgets": cfg.n_budgets, "jobs": {"cosine": ["cosine-4k", "cosine-8k"]}}
    assert pretrain.plan is orig
    trunk = [it for it in submit.work_items("00_pretraining_suite", cfg) if it["label"].startswith("trunk")]
    submit.run_slice("00_pretraining_suite", "smoke", {}, None, trunk)
    assert set(seen["jobs"]) == {"wsd", "constant"} and seen["jobs"]["constant"] == ["trunk"]
    assert seen["jobs"]["wsd"][0] == "trunk" and len(seen["jobs"]["wsd"]) == 1 + cfg.n_budgets


def test_submit_command_line_refuses_clearly(env, capsys):
    rc = run.main(["submit", "03_fixed_lr_finetuning", "--profile", "smoke", "--executor", "local",
                   "--folder", str(env / "s")])
    assert rc == 1 and "not built yet" in capsys.readouterr().err and not (env / "s").exists()
    rc = run.main(["submit", "02_gaussian_sensitivity", "--profile", "smoke", "-p", "gamas", "1"])
    assert rc == 1 and "unknown parameter(s) 'gamas'" in capsys.readouterr().err
    rc = run.main(["submit", "02_gaussian_sensitivity", "--profile", "smoke", "--gpus-per-node", "2",
                   "--executor", "local", "--folder", str(env / "s")])
    assert rc == 1 and "runs on one device per job" in capsys.readouterr().err


def test_slurm_executor_parameters(env, monkeypatch):
    """The SLURM executor's parameters are ones submitit knows (a fake ``srun`` stands in for a cluster)."""
    bin_ = env / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    ex = submit._executor("slurm", env / "sx", partition="gpu", gpus_per_node=4, timeout_min=60, account="acc",
                          cpus_per_task=8, parallelism=16, name="coft-03")
    text = ex._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--account=acc", "--gpus-per-node=4", "--time=60", "--nodes=1",
                 "--signal=USR2@90"):  # USR2 before the time limit: submitit checkpoints and requeues
        assert f"#SBATCH {line}" in text
    with pytest.raises(submit.SubmitError, match="unknown executor 'pbs'; allowed: slurm, local"):
        submit._executor("pbs", env / "sx", partition=None, gpus_per_node=1, timeout_min=1, account=None,
                         cpus_per_task=1, parallelism=1, name="x")


def test_chapter_01_slice_runs_its_checkpoints(env, monkeypatch):
    """A chapter 01 slice runs the chapter on its checkpoint labels (the chapter removes only its
    own trainer folders, so concurrent slices do not delete each other's: tests/test_paper_instruct)."""
    from coft_utils.chapters import instruct
    seen = {}

    def fake_run(cfg, series=None, progress=True):
        seen["checkpoints"] = cfg.checkpoints
        return {}
    monkeypatch.setattr(instruct, "run", fake_run)
    lab = profiles.series_info("suite", "smoke").labels[0]
    submit.run_slice("01_instruction_tuning", "smoke", {}, None, [{"label": f"ck {lab}", "overrides": {
        "checkpoints": [lab]}}])
    assert seen["checkpoints"] == (lab,)
