import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from coft_utils import run

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
