"""The Makefile's environment rules, read with ``make -n`` / ``make -s env-info`` (nothing is run):
offline only at smoke/cpu and for ``make test``; an active conda environment instead of .venv;
``VENV=`` overrides both."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
_STRIP = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "CONDA_PREFIX",
          "CONDA_DEFAULT_ENV", "VENV", "PROFILE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")


def make(*args, **env) -> str:
    e = {k: v for k, v in os.environ.items() if k not in _STRIP}
    e.update(env)
    r = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, env=e, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def info(*args, **env) -> dict:
    line = [l for l in make("-n", *args, "env-info", **env).splitlines() if "python=" in l][-1]
    return dict(re.findall(r"(\w+)=(\S*)", line.replace('"', "")))


@pytest.mark.parametrize("profile,offline", [("smoke", True), ("cpu", True), ("gpu", False), ("paper", False)])
def test_offline_only_at_smoke_and_cpu(profile, offline):
    got = info(f"PROFILE={profile}")
    assert got["profile"] == profile
    assert (got["HF_HUB_OFFLINE"], got["HF_DATASETS_OFFLINE"]) == (("1", "1") if offline else ("", ""))


def test_default_profile_is_cpu_and_offline():
    got = info()
    assert got["profile"] == "cpu" and got["HF_HUB_OFFLINE"] == "1"


def test_make_test_is_offline_whatever_the_profile():
    assert info("test", "PROFILE=paper")["HF_HUB_OFFLINE"] == "1"


def test_book_at_paper_runs_the_paper_profile_online():
    out = make("-n", "book", "PROFILE=paper")
    assert "-m coft_utils book --profile paper" in out
    assert "HF_HUB_OFFLINE" not in out


def test_active_conda_env_is_used_instead_of_venv():
    out = make("-n", "test", CONDA_PREFIX="/x", CONDA_DEFAULT_ENV="coft")
    assert "/x/bin/python -m pytest" in out and ".venv" not in out
    assert out.index("/x/bin/python -m pip install --quiet torch==2.13.0") < out.index("-e '.[dev]'")
    assert info(CONDA_PREFIX="/x")["python"] == "/x/bin/python"  # CONDA_DEFAULT_ENV unset: not base


def test_conda_base_is_not_used_and_venv_overrides():
    assert info(CONDA_PREFIX="/opt/conda", CONDA_DEFAULT_ENV="base")["python"] == ".venv/bin/python"
    assert info(CONDA_PREFIX="/x", CONDA_DEFAULT_ENV="coft", VENV="/y")["python"] == "/y/bin/python"
    assert info("VENV=/z", CONDA_PREFIX="/x")["python"] == "/z/bin/python"
    assert info()["python"] == ".venv/bin/python"
