"""The chapter registry is the one list of chapters: it matches _toc.yml, the notebooks and the
claims, and the layers hold (no chapter imports another; the foundation imports neither)."""
import ast
import re
from pathlib import Path

import yaml

from coft_utils.book import claims, run
from coft_utils.foundation import profiles, registry

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "coft_utils"


def _toc_chapters():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    out = []
    for part in toc["parts"]:
        for ch in part["chapters"]:
            if ch["file"].startswith("book/_generated/") and ch["file"] != "book/_generated/status":
                out.append((part["caption"], ch["file"].split("/")[-1]))
    return out


def test_registry_matches_toc_notebooks_and_runner():
    toc = _toc_chapters()
    assert sorted(n for _, n in toc) == registry.names()
    for part, name in toc:
        assert registry.get(name).part == part, name
    assert sorted(p.stem for p in (REPO / "notebooks").glob("*.py")) == registry.names()
    assert run.chapters() == registry.names()
    assert set(profiles.CHAPTERS) == set(registry.names())


def test_titles_are_the_notebook_headings():
    for name in registry.names():
        head = next(l for l in registry.notebook(name).read_text().splitlines() if l.startswith("# # "))
        assert head[4:].strip() == registry.get(name).title, name


def test_claims_belong_to_exactly_one_chapter_and_exist():
    listed = [c for ch in registry.CHAPTERS.values() for c in ch.claims]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(claims.CLAIMS)
    for cid, c in claims.CLAIMS.items():
        assert cid in registry.get(c.chapter).claims


def test_modules_import_and_presets_exist():
    for name in registry.names():
        assert hasattr(registry.experiment(name), "PRESETS"), name
        registry.report(name)


def _imports(path: Path, top_level_only: bool):
    """Modules of coft_utils that ``path`` imports (``layer.module``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    layer = path.parent.name
    out = set()
    for n in nodes:
        if isinstance(n, ast.ImportFrom):
            if n.level == 1:
                base = f"{layer}.{n.module}" if n.module else layer
            elif n.level == 2:
                base = n.module or ""
            elif n.module and n.module.startswith("coft_utils."):
                base = n.module[len("coft_utils."):]
            else:
                continue
            for a in n.names:
                out.add(base if "." in base and n.module else f"{base}.{a.name}".strip("."))
    return out


def _family(module: str) -> set[str]:
    """The registry chapters a chapter module belongs to (pretrain_launch -> pretrain's)."""
    fam = {n for n, c in registry.CHAPTERS.items() if module in (c.experiment, c.report)}
    if not fam:
        fam = {n for n, c in registry.CHAPTERS.items()
               if module.startswith(c.experiment + "_") or module.startswith(c.report + "_")}
    return fam


def test_no_chapter_imports_another_chapter():
    for p in sorted((PKG / "chapters").glob("*.py")):
        if p.name == "__init__.py":
            continue
        me = _family(f"coft_utils.chapters.{p.stem}")
        assert me, f"{p.name} belongs to no chapter of the registry"
        for imp in _imports(p, top_level_only=False):
            if imp.startswith("chapters."):
                other = _family("coft_utils." + imp)
                assert other & me, f"{p.name} imports {imp} (another chapter's module)"


def test_foundation_imports_no_chapter_and_no_book():
    for p in sorted((PKG / "foundation").glob("*.py")):
        bad = [i for i in _imports(p, top_level_only=False) if re.match(r"(chapters|book)\b", i)]
        assert not bad, f"{p.name} imports {bad} (the foundation reaches chapters only through the registry)"
