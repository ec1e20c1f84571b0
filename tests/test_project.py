"""The project's own set-up files agree with each other and with the README."""
import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    py = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    want = {_name(r) for r in py["dependencies"] + py["optional-dependencies"]["dev"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {_name(r) for r in pip} == want
    pins = {_name(r): r for r in py["dependencies"]}
    assert pins["torch"] == "torch==2.13.0"
    assert pins["jupyter-book"] == "jupyter-book>=1.0.4,<2"
    for r in pip:  # same version pins on both sides
        if _name(r) in pins:
            assert r.replace(" ", "") == pins[_name(r)].replace(" ", ""), r


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    cmds = [l.split("#")[0].strip() for l in first_block.splitlines() if l.strip()]
    assert cmds == ["make book", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert [l for l in ci.splitlines() if l.strip() and not l.startswith("#") and not l.startswith("set ")
            and not l.startswith("cd ")] == ["make test"]
    mk = (REPO / "Makefile").read_text()
    assert mk.index("torch==2.13.0") < mk.index("-e '.[dev]'")


def test_book_config_renders_only():
    cfg = yaml.safe_load((REPO / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["only_build_toc_files"] is True
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    chapters = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py"))
    assert sorted(f.split("/")[-1] for f in files if f.startswith("book/_generated/") and f != "book/_generated/status") == chapters
