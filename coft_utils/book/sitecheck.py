"""Check the rendered site as a reader's browser sees it: offline, in headless Chromium.

::

    from coft_utils.book import sitecheck
    report = sitecheck.check_site("_build/html")     # serves it on 127.0.0.1, opens every page
    report.problems                                   # [] when every check passes
    python -m coft_utils.book.sitecheck _build/html        # the same from the shell (exit 1 on problems)

Every request that does not go to the local server is blocked (and counted as a failure), so a
page that needs a CDN fails. For every page it asserts: no failed request or HTTP error, no
console error or uncaught exception, every image decoded (``naturalWidth > 0``), all math
typeset by MathJax (no raw TeX left), and every internal link (and its ``#anchor``) resolves.
One screenshot per page is saved under ``<site>/../screenshots/``. Uses Debian's ``chromium``
through Playwright (``executable_path``), never a browser that Playwright downloads.
"""
from __future__ import annotations

import functools
import http.server
import shutil
import sys
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


@dataclass
class Report:
    pages: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)
    math_elements: int = 0
    images: int = 0
    links_checked: int = 0


def chromium_path() -> str:
    """Path of Debian's chromium (``chromium`` or ``chromium-browser`` on PATH). Nothing is installed
    here: ``make test`` installs it first (its ``chromium`` prerequisite, apt-get where available)."""
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    raise FileNotFoundError("Chromium is not installed: neither `chromium` nor `chromium-browser` is on PATH; "
                            "install it with `make chromium` (Debian/Ubuntu: apt-get install chromium)")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a browser cancelling a request is no error
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def serve(root: Path):
    handler = functools.partial(_Quiet, directory=str(root))
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


_PAGE_JS = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const imgs = [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
  const maths = [...document.querySelectorAll('.math')];
  const raw = maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80));
  const main = document.querySelector('main') || document.body;
  const text = main.innerText;
  const leftover = (text.match(/\\$\\$|\\\\\\(|\\\\\\[|\\\\begin\\{/g) || []).length;
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  return {imgs, nmath: maths.length, raw, leftover, ids, links};
}
"""


def check_site(site: str | Path, screenshot_dir: str | Path | None = None, timeout_ms: int = 30000) -> Report:
    from playwright.sync_api import sync_playwright
    site = Path(site).resolve()
    if not (site / "index.html").is_file():
        raise FileNotFoundError(f"no site at {site} (index.html missing): build it first")
    chromium = chromium_path()  # FileNotFoundError (how to install it) before anything starts
    shots = Path(screenshot_dir) if screenshot_dir else site.parent / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                   if not p.relative_to(site).as_posix().startswith(("_static/", "_sources/", "_images/")))
    rep = Report(pages=pages)
    server, base = serve(site)
    ids_of: dict[str, set] = {}
    links: list[tuple[str, str]] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            ctx = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")

            def route(r):
                if r.request.url.startswith(base) or r.request.url.startswith("data:"):
                    r.continue_()
                else:
                    rep.problems.append(f"blocked request to the network: {r.request.url}")
                    r.abort()
            ctx.route("**/*", route)
            for rel in pages:
                page = ctx.new_page()
                errs: list[str] = []
                page.on("console", lambda m, errs=errs: errs.append(f"console {m.type}: {m.text}")
                        if m.type == "error" else None)
                page.on("pageerror", lambda e, errs=errs: errs.append(f"uncaught: {e}"))
                page.on("requestfailed", lambda r, errs=errs: errs.append(f"request failed: {r.url} ({r.failure})")
                        if not r.url.startswith("data:") else None)
                page.on("response", lambda r, errs=errs: errs.append(f"HTTP {r.status}: {r.url}")
                        if r.status >= 400 else None)
                page.goto(base + rel, wait_until="networkidle", timeout=timeout_ms)
                info = page.evaluate(_PAGE_JS)
                shot = shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
                page.screenshot(path=str(shot), full_page=True)
                rep.screenshots.append(shot)
                for e in errs:
                    rep.problems.append(f"{rel}: {e}")
                for im in info["imgs"]:
                    rep.images += 1
                    if not im["ok"]:
                        rep.problems.append(f"{rel}: image not decoded: {im['src']}")
                rep.math_elements += info["nmath"]
                for r in info["raw"]:
                    rep.problems.append(f"{rel}: math not typeset: {r!r}")
                if info["leftover"]:
                    rep.problems.append(f"{rel}: {info['leftover']} raw TeX delimiter(s) left in the page text")
                ids_of[rel] = set(info["ids"])
                links.extend((rel, h) for h in info["links"])
                page.close()
            browser.close()
        # internal links: the target page exists and so does its anchor
        for rel, href in links:
            if not href.startswith(base):
                continue
            url, _, frag = href.partition("#")
            target = urllib.parse.unquote(url[len(base):]) or "index.html"
            if target.endswith("/"):
                target += "index.html"
            rep.links_checked += 1
            if target in ids_of:
                if frag and frag not in ids_of[target]:
                    rep.problems.append(f"{rel}: link to {target}#{frag}: no such anchor")
                continue
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    ok = resp.status == 200
            except Exception:
                ok = False
            if not ok:
                rep.problems.append(f"{rel}: broken internal link {href}")
    finally:
        server.shutdown()
    return rep


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    site = Path(argv[0]) if argv else Path("_build/html")
    rep = check_site(site)
    print(f"{len(rep.pages)} pages, {rep.images} images, {rep.math_elements} math elements, "
          f"{rep.links_checked} internal links; screenshots in {rep.screenshots[0].parent if rep.screenshots else '-'}")
    for p in rep.problems:
        print("PROBLEM:", p)
    return 1 if rep.problems else 0


if __name__ == "__main__":
    sys.exit(main())
