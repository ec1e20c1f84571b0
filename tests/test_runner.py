import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from coft_utils.book import run
REPO = Path(__file__).resolve().parents[1]

NB = '''# %% [markdown]
# A test notebook.

# %% tags=["parameters"]
profile = "cpu"
seed = 0
overrides = {}

# %%
print(f"profile={profile} seed={seed} overrides={sorted(overrides.items())}")
if overrides.get("fail"):
    raise ValueError("boom-" + str(overrides["fail"]))
'''


@pytest.fixture
def nb_path(tmp_path):
    p = tmp_path / "99_test.py"
    p.write_text(NB)
    return p


def _outputs(path):
    nb = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_runner_injects_parameters(nb_path, tmp_path):
    out = run.run_notebook(str(nb_path), "smoke", {"seed": 5, "gammas": [0.1, 0.2]}, tmp_path / "out",
                           progress=False)
    assert "profile=smoke seed=5 overrides=[('gammas', [0.1, 0.2])]" in _outputs(out)
    meta = nbformat.read(out, as_version=4).metadata["coft"]
    assert meta["profile"] == "smoke" and meta["wall_s"] > 0
    # unchanged source and parameters: not re-run; other parameters: re-run
    mtime = out.stat().st_mtime_ns
    run.run_notebook(str(nb_path), "smoke", {"seed": 5, "gammas": [0.1, 0.2]}, tmp_path / "out", progress=False)
    assert out.stat().st_mtime_ns == mtime
    run.run_notebook(str(nb_path), "smoke", {"seed": 6}, tmp_path / "out", progress=False)
    assert "seed=6" in _outputs(out)


def test_runner_fails_on_a_raising_cell(nb_path, tmp_path):
    out_dir = tmp_path / "out"
    with pytest.raises(run.RunError, match="ValueError: boom-42"):
        run.run_notebook(str(nb_path), "smoke", {"fail": 42}, out_dir, progress=False)
    assert (out_dir / "99_test.failed.ipynb").is_file()
    assert not (out_dir / "99_test.ipynb").exists()
    # the command line exits non-zero and prints the failing cell's error
    r = subprocess.run([sys.executable, "-m", "coft_utils", "run", str(nb_path), "--profile", "smoke",
                        "-p", "fail", "7", "--out", str(out_dir)], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "boom-7" in r.stderr
    r = subprocess.run([sys.executable, "-m", "coft_utils", "run", str(nb_path), "--profile", "smoke",
                        "-y", "{extra: [1, 2]}", "--out", str(out_dir)], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "overrides=[('extra', [1, 2])]" in _outputs(out_dir / "99_test.ipynb")


def test_unknown_notebook_and_profile(tmp_path):
    with pytest.raises(run.RunError, match="no notebook 'nope'"):
        run.run_notebook("nope", "smoke", out_dir=tmp_path)
    r = subprocess.run([sys.executable, "-m", "coft_utils", "run", "05_linear_theory", "--profile", "huge"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "invalid choice: 'huge'" in r.stderr


def test_split_params():
    assert run.split_params({"profile": "cpu", "seed": 1, "gammas": [1]}) == \
        {"profile": "cpu", "seed": 1, "overrides": {"gammas": [1]}}
    assert run.split_params({"overrides": {"a": 1}, "b": 2}) == {"overrides": {"a": 1, "b": 2}}


LOOP_NB = '''# %% tags=["parameters"]
profile = "cpu"
seed = 0
overrides = {}

# %%
import os, time
with open(overrides["path"] + ".pid", "w") as f:
    f.write(str(os.getpid()))
while True:  # a stand-in for a chapter writing result records; each says who its parent is
    with open(overrides["path"], "a") as f:
        f.write(f"{os.getppid()}\\n")
    time.sleep(0.02)
'''


def _children(pid: int) -> list[int]:
    """Live descendants of ``pid``, from /proc."""
    ppid = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [c for c, pp in ppid.items() if pp == parent]
        out += kids
        todo += kids
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
@pytest.mark.parametrize("how", ["sigkill-group", "sigterm"])
def test_killing_the_runner_stops_its_kernel(tmp_path, how):
    """The kernel has a session of its own (interrupts reach it alone), yet it dies with the runner:
    at once on SIGKILL of the runner's process group, shut down by the runner on SIGTERM."""
    nb = tmp_path / "99_loop.py"
    nb.write_text(LOOP_NB)
    rec = tmp_path / "records.txt"
    proc = subprocess.Popen([sys.executable, "-m", "coft_utils", "run", str(nb), "--profile", "smoke",
                             "-p", "path", str(rec), "--out", str(tmp_path / "out")], cwd=REPO,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (rec.is_file() and rec.stat().st_size) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert rec.is_file() and rec.stat().st_size, proc.stderr.read().decode()[-2000:] if proc.poll() else ""
        kernel = int(Path(f"{rec}.pid").read_text())
        kids = _children(proc.pid)
        assert kernel in kids and os.getpgid(kernel) != os.getpgid(proc.pid)
        t0 = time.time()
        if how == "sigkill-group":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        while any(_alive(k) for k in kids) and time.time() - t0 < 3:
            time.sleep(0.01)
        assert not [k for k in kids if _alive(k)], f"kernel still alive {time.time() - t0:.1f} s after {how}"
        size = rec.stat().st_size
        time.sleep(0.5)
        assert rec.stat().st_size == size, "records still written after the runner was killed"
        # none written by an orphaned kernel (before, ipykernel noticed its dead parent ~1 s later)
        assert set(rec.read_text().split()) == {str(proc.pid)}
        rc = proc.wait(timeout=10)
        assert rc == (-signal.SIGKILL if how == "sigkill-group" else -signal.SIGTERM)
        if how == "sigterm":
            assert (tmp_path / "out" / "99_loop.failed.ipynb").is_file()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for k in _children(proc.pid) if proc.poll() is None else []:
            os.kill(k, signal.SIGKILL)


def test_the_up_to_date_stamp_covers_every_layer_of_the_package():
    """A change to any module (foundation, chapters, book) makes every chapter run again."""
    names = {p.relative_to(run.REPO_ROOT / "coft_utils").as_posix() for p in run._code_files()}
    assert {"foundation/verdicts.py", "chapters/finetune.py", "chapters/finetune_report.py",
            "book/claims.py", "__init__.py"} <= names
