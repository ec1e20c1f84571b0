"""The project's own set-up files agree with each other and with the README."""
import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_installs_the_package_torch_first_with_node():
    """environment.yml holds no second package list to drift: conda gives Python, pip and Node.js
    (npm: the offline MathJax of the site build), pip gives torch (pinned as in pyproject) first and
    then the package with its [dev] extras, i.e. pyproject's own pins."""
    py = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {_name(r): r for r in py["dependencies"]}
    assert pins["torch"] == "torch==2.13.0"
    assert pins["jupyter-book"] == "jupyter-book>=1.0.4,<2"
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert {_name(d) for d in conda} >= {"python", "pip", "nodejs"}
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == [pins["torch"], "-e .[dev]"]
    assert "dev" in py["optional-dependencies"]


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
