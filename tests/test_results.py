import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coft_utils.foundation import results
REPO = Path(__file__).resolve().parents[1]

WRITER = r"""
import sys, time
sys.path.insert(0, {repo!r})
from coft_utils.foundation import results
store = results.Store("killtest", "smoke", root={root!r})
units = [{{"checkpoint": c, "gamma": g}} for c in range(6) for g in (0.0, 0.5, 1.0, 2.0)]
def work(u):
    time.sleep({delay})
    return {{"value": u["checkpoint"] * 10 + u["gamma"], "inf": float("inf")}}
store.run(units, work, config={{"delay": {delay}}}, data_names=["copa"], progress=False)
print("DONE")
"""


def _writer(root, delay):
    return [sys.executable, "-c", WRITER.format(repo=str(REPO), root=str(root), delay=delay)]


def _snapshot(root):
    recs = results.Store("killtest", "smoke", root=root).records()
    return sorted((json.dumps(r["unit"], sort_keys=True), r["metrics"]["value"]) for r in recs)


def test_killed_writer_resumes_to_the_same_records(tmp_path):
    ref = tmp_path / "ref"
    assert subprocess.run(_writer(ref, 0.0), capture_output=True, text=True, timeout=120).returncode == 0
    expected = _snapshot(ref)
    assert len(expected) == 24

    run = tmp_path / "run"
    p = subprocess.Popen(_writer(run, 0.25))
    deadline = time.time() + 60
    while time.time() < deadline and len(list(run.glob("*.json"))) < 5:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    partial = len(list(run.glob("*.json")))
    assert 5 <= partial < 24, partial  # killed mid-run
    r = subprocess.run(_writer(run, 0.0), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "DONE" in r.stdout
    assert _snapshot(run) == expected
    assert len(list(run.glob("*.json"))) == 24  # no duplicates
    for f in run.iterdir():  # every file is a complete JSON record; stray temp files are not records
        if f.suffix == ".json":
            json.loads(f.read_text())


def test_record_has_provenance_and_rerun_skips(tmp_path):
    store = results.Store("unit", "smoke", root=tmp_path)
    calls = []
    fn = lambda u: calls.append(u) or {"loss": 1.5, "ppl": float("inf")}
    store.run([{"a": 1}, {"a": 2}], fn, config={"lr": 0.1}, data_names=["copa"], progress=False)
    store.run([{"a": 1}, {"a": 2}, {"a": 3}], fn, config={"lr": 0.1}, progress=False)
    assert [c["a"] for c in calls] == [1, 2, 3]
    rec = store.get({"a": 1})
    assert rec["metrics"]["ppl"] == float("inf")  # non-finite numbers survive JSON
    assert rec["config"] == {"lr": 0.1}
    from coft_utils.foundation import data
    expected_sha = [l.split()[0] for l in (data.data_dir() / "SHA256SUMS").read_text().splitlines()
                    if l.endswith(" copa/copa.jsonl")]
    assert rec["data_sha256"] == {"copa/copa.jsonl": expected_sha[0]}
    assert rec["packages"]["torch"].startswith("2.13") and "transformers" in rec["packages"]
    assert len(rec["git"]["commit"]) in (40, 7) or rec["git"]["commit"] == "unknown"
    assert "platform" in rec["device"] and rec["time"]
    df = store.frame()
    assert list(df["a"]) == [1, 2, 3] and "loss" in df
    assert list(df["record_id"]) == [results.unit_id({"a": a}) for a in (1, 2, 3)]  # what a claim cites
    with pytest.raises(ValueError, match="distinct"):
        store.run([{"a": 1}, {"a": 1}], fn, progress=False)
