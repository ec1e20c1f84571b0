"""Every chapter executes at the smoke profile, and the book builds from them with -W -n."""
import shutil
from pathlib import Path

import nbformat
import pytest

from coft_utils import run

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def smoke_site(tmp_path_factory):
    """A copy of the book skeleton whose _generated/ receives the smoke-profile notebooks."""
    root = tmp_path_factory.mktemp("site")
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO / f, root / f)
    shutil.copytree(REPO / "book", root / "book", ignore=shutil.ignore_patterns("_generated"))
    (root / "book" / "_generated").mkdir()
    return root


@pytest.fixture(scope="session", autouse=True)
def _smoke_runs(tmp_path_factory):
    """Smoke runs (suite, records) go to a fresh folder, as on a fresh machine."""
    import os
    d = tmp_path_factory.mktemp("smoke_runs")
    old = os.environ.get("COFT_RUNS_DIR")
    os.environ["COFT_RUNS_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("COFT_RUNS_DIR", None)
    else:
        os.environ["COFT_RUNS_DIR"] = old


@pytest.mark.parametrize("chapter", run.chapters())
def test_chapter_executes_at_smoke(chapter, smoke_site):
    out = run.run_notebook(chapter, "smoke", out_dir=smoke_site / "book" / "_generated", force=True,
                           progress=False)
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    if chapter != "99_claims":  # the claims page is a table; every chapter has figures
        assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
                   for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])), "no figure"
    assert nb.metadata["coft"]["profile"] == "smoke"


def test_book_builds_without_warnings(smoke_site):
    gen = smoke_site / "book" / "_generated"
    for chapter in run.chapters():
        if not (gen / f"{chapter}.ipynb").is_file():
            run.run_notebook(chapter, "smoke", out_dir=gen, progress=False)
    index = run.build(smoke_site)  # raises on any warning (-W -n --keep-going)
    html = smoke_site / "_build" / "html"
    assert index.is_file()
    for chapter in run.chapters():
        page = html / "book" / "_generated" / f"{chapter}.html"
        assert page.is_file(), page
        assert "Traceback" not in page.read_text()
    assert (html / "book" / "reproducing.html").is_file()


def test_site_works_offline_in_a_real_browser(smoke_site):
    """Headless Chromium, all network but 127.0.0.1 blocked: no failed request, no console
    error, every figure decoded, math typeset, every internal link resolves."""
    from coft_utils import sitecheck
    html = smoke_site / "_build" / "html"
    if not (html / "index.html").is_file():
        test_book_builds_without_warnings(smoke_site)
    rep = sitecheck.check_site(html, install=True)
    assert not rep.problems, "\n".join(rep.problems)
    assert len(rep.screenshots) == len(rep.pages) >= 3 + len(run.chapters())
    assert rep.images >= len(run.chapters()) - 1  # every chapter has at least one figure
    assert rep.math_elements > 0
    assert rep.links_checked > 0
