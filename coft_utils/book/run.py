"""Notebook runner: jupytext source -> papermill execution -> Jupyter Book (render only).

Command line (``python -m coft_utils ...``)::

    python -m coft_utils list                                   # chapters and their sources
    python -m coft_utils run 02_gaussian_sensitivity --profile cpu -y '{gammas: [0.01, 0.05]}'
    python -m coft_utils run 05_linear_theory --profile smoke -p seed 3 --out /tmp/nb
    python -m coft_utils build                                  # jupyter-book build -W -n --keep-going
    python -m coft_utils book --profile cpu                     # run every chapter, then build
    python -m coft_utils verify                                 # re-hash every data file (SHA256SUMS)
    python -m coft_utils verify copa gsm8k                      # ... of these sets only
    python -m coft_utils plan 04_lr_sweep --profile paper       # every unit with tokens, FLOPs, memory, GPU-hours
    python -m coft_utils plan all --profile gpu --markdown plan.md
    python -m coft_utils submit 03_fixed_lr_finetuning --profile paper --partition gpu --slices 16

``run`` reads ``notebooks/<name>.py`` with jupytext, injects the parameters with papermill
(``profile``, ``seed``; every other key goes into the ``overrides`` dict, validated by the
chapter's config before any work starts) and writes ``book/_generated/<name>.ipynb``. A raising
cell makes the command exit non-zero with that cell's error; the partial notebook is kept as
``<name>.failed.ipynb`` and the last good one is left in place. A notebook whose source,
parameters and ``coft_utils`` code are unchanged since its last successful run is not re-run
(``--force`` re-runs it). At the smoke and cpu profiles nothing is downloaded
(``HF_HUB_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1``). At ``gpu`` and ``paper`` the pre-flight
(:func:`preflight`: missing hub revisions, duplicate-weight checkpoints) runs before the kernel
starts; its failure is exit 1 with nothing run. ``plan`` is :mod:`coft_utils.book.plan`,
``submit`` is :mod:`coft_utils.book.submit`.

Python::

    from coft_utils.book import run
    run.run_notebook("05_linear_theory", profile="smoke", params={"n_modes": 3}, out_dir=tmp)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..foundation import profiles, registry, results
from . import status

REPO_ROOT = Path(__file__).resolve().parents[2]
NB_DIR = REPO_ROOT / "notebooks"
GEN_DIR = REPO_ROOT / "book" / "_generated"
RESERVED = ("profile", "seed")


class RunError(RuntimeError):
    """A notebook that failed to execute (the message holds the failing cell's error)."""


def chapters() -> list[str]:
    """Chapter names (notebook stems) in book order, from the chapter registry."""
    return registry.names()


def notebook_source(name: str) -> Path:
    p = Path(name)
    if p.suffix == ".py" and p.is_file():
        return p.resolve()
    cand = NB_DIR / f"{p.stem}.py"
    if not cand.is_file():
        raise RunError(f"no notebook {name!r}: looked for {cand}; allowed: {', '.join(chapters())}")
    return cand


def split_params(params: dict) -> dict:
    """Papermill parameters: profile and seed as they are, everything else into ``overrides``."""
    params = dict(params)
    out = {k: params.pop(k) for k in RESERVED if k in params}
    ov = params.pop("overrides", None) or {}
    if not isinstance(ov, dict):
        raise profiles.ProfileError(f"parameter 'overrides' = {ov!r:.200} must be a mapping of parameter names "
                                    "to values, e.g. -y '{overrides: {n_budgets: 3}}'")
    overrides = dict(ov)
    overrides.update(params)
    out["overrides"] = overrides
    return out


def _code_files() -> list[Path]:
    """Every source file of the package (all three layers): a change to any re-runs the chapters."""
    pkg = REPO_ROOT / "coft_utils"
    return sorted(p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts)


def _code_hash() -> str:
    h = hashlib.sha256()
    pkg = REPO_ROOT / "coft_utils"
    for p in _code_files():
        h.update(p.relative_to(pkg).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def inputs_fingerprint(cfg) -> str:
    """What a page depends on beyond its notebook, parameters and code: for a user series file
    (``series`` = a .json/.yaml path), the file's bytes and the weights of each local checkpoint
    (``weights.identity``: content-hashed once, then cached), so a changed checkpoint or a
    checkpoint dropped from the file makes the page stale. '' for the suite and built-in series
    (their folders are keyed by config and code; hub revisions are pinned)."""
    from ..foundation import series as series_mod
    from ..foundation import weights
    name = getattr(cfg, "series", None)
    if not name or name == "suite" or not str(name).endswith(series_mod.FILE_SUFFIXES) or not os.path.isfile(name):
        return ""
    h = hashlib.sha256(Path(name).read_bytes())
    try:  # a missing folder or one without weights: named here, before any work
        for c in series_mod.load(name):
            h.update(f"{c.label}={weights.identity(c) if c.path else c.hub_id + '@' + str(c.revision)}".encode())
    except series_mod.SeriesError as e:
        raise profiles.ProfileError(f"parameter 'series' = {name!r}: {e}") from None
    return h.hexdigest()[:16]


def _stamp(src: Path, nb_params: dict, inputs: str = "") -> str:
    h = hashlib.sha256()
    h.update(src.read_bytes())
    h.update(json.dumps(nb_params, sort_keys=True, default=str).encode())
    h.update(_code_hash().encode())
    h.update(inputs.encode())
    return h.hexdigest()[:24]


def _read_stamp(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["metadata"].get("coft", {}).get("stamp")
    except (OSError, ValueError, KeyError):
        return None


# The kernel papermill starts (jupyter_client's launcher) gets a session of its own (so that an
# interrupt reaches it alone), hence killing the runner's process group (kill -9 -PGID) did not
# reach it: ipykernel noticed its dead parent only about a second later, running (and writing
# result records) meanwhile. So the kernel's first act is PR_SET_PDEATHSIG(SIGKILL): Linux kills
# it the moment the runner dies, however the runner dies; if the runner is already gone by then,
# it exits. Then ``ipykernel_launcher`` runs exactly as ``python -m ipykernel_launcher`` would.
_KERNEL_BOOT = """\
import os, runpy, signal, sys
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    if os.environ.get("JPY_PARENT_PID", "").isdigit() and os.getppid() != int(os.environ["JPY_PARENT_PID"]):
        os._exit(1)  # the runner died before the line above
runpy._run_module_as_main("ipykernel_launcher")
"""


def bind_kernel_cmd(cmd: list[str]) -> list[str]:
    """A kernel command ``[python, ..., -m, ipykernel_launcher, ...]`` that dies with its parent."""
    cmd = list(cmd)
    for i in range(len(cmd) - 1):
        if cmd[i] == "-m" and cmd[i + 1] == "ipykernel_launcher" and sys.platform.startswith("linux"):
            return cmd[:i] + ["-c", _KERNEL_BOOT] + cmd[i + 2:]
    return cmd


_KM_CLASS = None


def kernel_manager_class():
    """nbclient's kernel manager (``AsyncKernelManager``), with :func:`bind_kernel_cmd` applied."""
    global _KM_CLASS
    if _KM_CLASS is None:
        from jupyter_client.manager import AsyncKernelManager

        class BoundKernelManager(AsyncKernelManager):
            def format_kernel_cmd(self, extra_arguments=None):
                return bind_kernel_cmd(super().format_kernel_cmd(extra_arguments))
        _KM_CLASS = BoundKernelManager
    return _KM_CLASS


class _Terminated(BaseException):
    """SIGTERM while a notebook runs: unwinds papermill, whose nbclient shuts the kernel down."""


@contextmanager
def _sigterm_unwinds():
    """While a notebook runs, SIGTERM raises :class:`_Terminated` (the default would end the
    runner at once and leave the kernel to PR_SET_PDEATHSIG; this way it is shut down and the
    partial notebook written). SIGINT is left alone: KeyboardInterrupt does the same already."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    prev = signal.getsignal(signal.SIGTERM)
    if prev is None:  # a handler not installed from Python
        prev = signal.SIG_DFL

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, prev)  # a second SIGTERM is not caught
        raise _Terminated(signum)
    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, prev)


def preflight(cfg) -> None:
    """Before a ``gpu``/``paper`` kernel starts: :func:`coft_utils.foundation.preflight.check_config`
    on a chapter with a checkpoint series (missing revisions, two checkpoints with the same
    weights); its error becomes a :class:`RunError` (exit 1, no kernel). Nothing at smoke/cpu."""
    if getattr(cfg, "profile", None) not in ("gpu", "paper") or not hasattr(cfg, "series"):
        return
    from ..foundation import preflight as pf  # imported here: it is only needed at gpu/paper
    try:
        pf.check_config(cfg)
    except pf.PreflightError as e:
        raise RunError(f"pre-flight failed, nothing was run: {e}") from None


def run_notebook(name: str, profile: str = profiles.DEFAULT_PROFILE, params: dict | None = None,
                 out_dir: str | os.PathLike | None = None, force: bool = False,
                 timeout: int | None = None, progress: bool = True) -> Path:
    """Execute one chapter with papermill; return the executed notebook's path."""
    import jupytext
    import nbformat
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    profiles.get_profile(profile)  # an unknown profile fails here, before anything runs
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise profiles.ProfileError(f"--timeout = {timeout!r}; allowed: a positive number of seconds per cell "
                                    "(omit it for no limit)")
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise profiles.ProfileError(f"--out = {str(out_dir)!r} is a file; allowed: a folder (created if missing)")
    src = notebook_source(name)
    nb_params = split_params({**(params or {}), "profile": profile})
    ser = nb_params["overrides"].get("series")
    if isinstance(ser, str) and ser.endswith((".json", ".yaml", ".yml")) and os.path.isfile(ser):
        nb_params["overrides"]["series"] = os.path.abspath(ser)  # the kernel runs in the repository root
    if src.stem in profiles.CHAPTERS:  # bad parameters fail here (ProfileError), before a kernel starts
        cfg = profiles.resolve(src.stem, profile, nb_params["overrides"], seed=nb_params.get("seed"))
    else:
        cfg = None
    out_dir = Path(out_dir) if out_dir else GEN_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{src.stem}.ipynb"
    stamp = _stamp(src, nb_params, inputs_fingerprint(cfg) if cfg is not None else "")
    if not force and out.is_file() and _read_stamp(out) == stamp:
        print(f"[coft] {src.stem}: up to date ({out})", flush=True)
        return out
    if cfg is not None:
        preflight(cfg)  # gpu/paper: missing revisions, duplicate weights (RunError), before a kernel starts
    profiles.apply_offline_env(profile)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    tmp = out_dir / f".{src.stem}.running.ipynb"
    t0 = time.time()
    print(f"[coft] {src.stem}: running at profile {profile!r} with {nb_params}", flush=True)
    try:
        with _sigterm_unwinds():
            pm.execute_notebook(nb, str(tmp), parameters=nb_params, kernel_name="python3",
                                language="python", cwd=str(REPO_ROOT), execution_timeout=timeout,
                                report_mode=False, progress_bar=False,
                                # the kernel dies with this process, even on SIGKILL
                                kernel_manager_class=kernel_manager_class(),
                                # the kernel's stderr (its tqdm bars: which unit of work) on our terminal
                                stderr_file=sys.stderr if progress else None)
    except _Terminated:
        failed = out_dir / f"{src.stem}.failed.ipynb"
        if tmp.exists():
            os.replace(tmp, failed)
        print(f"[coft] {src.stem}: terminated (SIGTERM) after {time.time() - t0:.0f} s; kernel shut down "
              f"(partial notebook: {failed})", file=sys.stderr, flush=True)
        status.log(src.stem, profile, nb_params, "terminated", time.time() - t0, "SIGTERM")
        os.kill(os.getpid(), signal.SIGTERM)  # now with the previous handler: by default, exit by SIGTERM
        raise RunError(f"notebook {src.stem} terminated (SIGTERM)") from None
    except (CellTimeoutError, DeadKernelError) as e:  # a cell over --timeout, a kernel that died
        failed = out_dir / f"{src.stem}.failed.ipynb"
        if tmp.exists():
            os.replace(tmp, failed)
        what = (f"a cell ran longer than --timeout {timeout} s" if isinstance(e, CellTimeoutError)
                else f"the kernel died ({str(e).splitlines()[0][:200] if str(e) else 'no message'})")
        status.log(src.stem, profile, nb_params, "failed", time.time() - t0, what)
        raise RunError(f"notebook {src.stem} stopped after {time.time() - t0:.0f} s: {what}\n"
                       f"(partial notebook: {failed})") from None
    except pm.PapermillExecutionError as e:
        failed = out_dir / f"{src.stem}.failed.ipynb"
        if tmp.exists():
            os.replace(tmp, failed)
        status.log(src.stem, profile, nb_params, "failed", time.time() - t0,
                   f"cell {e.exec_count}: {e.ename}: {e.evalue}")
        raise RunError(f"notebook {src.stem} failed in cell {e.exec_count} after "
                       f"{time.time() - t0:.0f} s: {e.ename}: {e.evalue}\n(partial notebook: {failed})") from None
    done = nbformat.read(tmp, as_version=4)
    for cell in done.cells:  # the book shows the injected parameters (what ran), not the defaults
        tags = cell.get("metadata", {}).get("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
        elif "injected-parameters" in tags and "hide-input" not in tags:  # collapsed: results come first
            cell.metadata["tags"] = tags + ["hide-input"]
    done.metadata["coft"] = {"stamp": stamp, "profile": profile, "params": nb_params,
                             "wall_s": round(time.time() - t0, 1), "source": str(src.relative_to(REPO_ROOT))
                             if src.is_relative_to(REPO_ROOT) else str(src)}
    nbformat.write(done, tmp)
    os.replace(tmp, out)
    (out_dir / f"{src.stem}.failed.ipynb").unlink(missing_ok=True)
    status.log(src.stem, profile, nb_params, "ok", time.time() - t0)
    print(f"[coft] {src.stem}: done in {time.time() - t0:.0f} s -> {out}", flush=True)
    return out


MATHJAX_VERSION = "3.2.2"
_MATHJAX_PARTS = ("tex-chtml.js", "output/chtml", "input/tex", "ui", "a11y", "sre")


def ensure_mathjax(root: str | os.PathLike = REPO_ROOT) -> Path:
    """Serve MathJax from the site itself: the npm ``mathjax`` package, installed at build time
    into ``.cache/npm`` and copied into ``book/_static/mathjax`` (not committed)."""
    root = Path(root)
    dest = root / "book" / "_static" / "mathjax"
    if (dest / "tex-chtml.js").is_file():
        return dest
    from ..foundation.data import cache_dir
    prefix = cache_dir() / "npm"
    es5 = prefix / "node_modules" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise RunError("npm is needed once to install MathJax for the offline site "
                           "(apt-get install npm, or any Node.js); it was not found on PATH")
        prefix.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                            "--silent", f"mathjax@{MATHJAX_VERSION}"], capture_output=True, text=True)
        if r.returncode != 0 or not (es5 / "tex-chtml.js").is_file():
            raise RunError(f"npm install mathjax@{MATHJAX_VERSION} failed: {r.stderr[-2000:]}")
    tmp = dest.with_name("mathjax.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for part in _MATHJAX_PARTS:
        src = es5 / part
        if src.is_dir():
            shutil.copytree(src, tmp / part)
        else:
            (tmp / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / part)
    os.replace(tmp, dest)
    return dest


def build(root: str | os.PathLike = REPO_ROOT, strict: bool = True) -> Path:
    """Render the site with ``jupyter-book build -W -n --keep-going`` (never executes notebooks)."""
    root = Path(root)
    ensure_mathjax(root)
    status.write_page(root)  # the execution-status page, from the runner's log
    from . import plan
    plan.write_page(root)  # every chapter's costed plan at gpu and paper (book/_generated/plan.md)
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if jb is None:
        raise RunError("jupyter-book is not installed in this environment (make venv installs it)")
    cmd = [jb, "build", str(root), "--all", "--keep-going"] + (["-W", "-n"] if strict else [])
    print("[coft] " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=root)
    if r.returncode != 0:
        raise RunError(f"jupyter-book build failed (exit {r.returncode}); see the warnings above")
    html = root / "_build" / "html" / "index.html"
    print(f"[coft] site: {html}", flush=True)
    return html


def _parse_params(pairs: list[list[str]] | None, yaml_text: str | None) -> dict:
    """``-y`` (a YAML mapping) and ``-p KEY VALUE`` pairs (each VALUE YAML), read by
    :mod:`coft_utils.foundation.safeyaml` (no aliases, ``1e3`` is a number, dates stay text);
    ``overrides``, if given, must be a mapping. Errors are :class:`profiles.ProfileError`."""
    from ..foundation import safeyaml
    params: dict = {}
    try:
        if yaml_text:
            loaded = safeyaml.load(yaml_text, "-y")
            if not isinstance(loaded, dict):
                raise profiles.ProfileError(f"-y expects a YAML mapping (key: value, ...), got "
                                            f"{safeyaml.quote(yaml_text)}")
            params.update(loaded)
        for key, value in pairs or []:
            params[key] = safeyaml.load(value, f"-p {key}")
    except safeyaml.YAMLInputError as e:
        raise profiles.ProfileError(str(e)) from None
    if "overrides" in params and not isinstance(params["overrides"] or {}, dict):
        raise profiles.ProfileError(f"parameter 'overrides' = {safeyaml.quote(str(params['overrides']))} must be a "
                                    "mapping of parameter names to values, e.g. -y '{overrides: {n_budgets: 3}}'")
    return params


def _chapter_params_help(chapter: str, profile: str) -> str:
    """The parameters of ``chapter`` at ``profile`` (name, value, what is allowed, meaning) for
    ``run CHAPTER --help``: what -p KEY VALUE and -y accept."""
    rows = profiles.describe(profiles.resolve(chapter, profile))
    lines = [f"parameters of {chapter} at profile {profile} (-p KEY VALUE, or -y '{{KEY: VALUE, ...}}'):"]
    for r in rows:
        if r["parameter"] == "profile":
            continue
        lines.append(f"  {r['parameter']} = {r['value']!r}  [{r['allowed']}]\n      {r['meaning']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m coft_utils", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the chapters")
    r = sub.add_parser("run", help="execute one chapter with papermill")
    r.add_argument("notebook")
    b = sub.add_parser("book", help="execute every chapter, then build the site")
    for p in (r, b):
        p.add_argument("--profile", default=profiles.DEFAULT_PROFILE, choices=list(profiles.PROFILES))
        p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("KEY", "VALUE"))
        p.add_argument("-y", "--yaml", help="parameters as a YAML mapping")
        p.add_argument("--out", help="folder for the executed notebooks (default book/_generated)")
        p.add_argument("--force", action="store_true", help="re-run even if up to date")
        p.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    pl = sub.add_parser("plan", help="every unit of work of a chapter at a profile, with tokens, FLOPs, memory, "
                        "GPU-hours (downloads nothing)")
    pl.add_argument("chapter", help="a chapter name or 'all'")
    pl.add_argument("--profile", default="paper", choices=list(profiles.PROFILES))
    pl.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("KEY", "VALUE"))
    pl.add_argument("-y", "--yaml", help="parameters as a YAML mapping")
    pl.add_argument("--json", help="also write the plan as JSON to this file")
    pl.add_argument("--markdown", help="also write the plan as a Markdown page to this file")
    pl.add_argument("--max-units", type=int, default=None, help="rows per chapter on stdout (default: all)")
    sm = sub.add_parser("submit", help="fan a chapter's units out as a SLURM job array (submitit)")
    sm.add_argument("chapter")
    sm.add_argument("--profile", default="paper", choices=list(profiles.PROFILES))
    sm.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("KEY", "VALUE"))
    sm.add_argument("-y", "--yaml", help="parameters as a YAML mapping")
    sm.add_argument("--executor", default="slurm", choices=("slurm", "local"))
    sm.add_argument("--slices", type=int, default=None, help="array jobs (default: one per work item)")
    sm.add_argument("--partition", default=None)
    sm.add_argument("--gpus-per-node", type=int, default=1)
    sm.add_argument("--timeout-min", type=int, default=240)
    sm.add_argument("--account", default=None)
    sm.add_argument("--folder", default=None, help="submitit's folder (default runs/<profile>/_submitit/<chapter>)")
    sm.add_argument("--dry-run", action="store_true", help="print the slices, submit nothing")
    sm.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                    help="wait for the array and resubmit failed slices (default: only with --executor local)")
    sm.add_argument("--retries", type=int, default=2, help="resubmissions of failed slices when waiting")
    sub.add_parser("build", help="render the site (jupyter-book build -W -n --keep-going)")
    v = sub.add_parser("verify", help="re-hash every file of every data set against SHA256SUMS")
    v.add_argument("sets", nargs="*", help="data set names (default: every local registered set)")
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"] and {"-h", "--help"} & set(args):  # the chapter's own parameters too
        names = [x for x in args[1:] if not x.startswith("-") and Path(x).stem in profiles.CHAPTERS]
        prof = args[args.index("--profile") + 1] if "--profile" in args[:-1] else profiles.DEFAULT_PROFILE
        if names and prof in profiles.PROFILES:
            r.epilog = _chapter_params_help(Path(names[0]).stem, prof)
            r.formatter_class = argparse.RawDescriptionHelpFormatter
    a = ap.parse_args(argv)
    try:
        if a.cmd == "verify":
            from ..foundation import data
            print(f"[coft] verifying {data.data_dir()} (SHA256SUMS, no cache)", flush=True)
            try:
                res = data.verify_all(rehash=True, names_=a.sets or None, echo=True)
            except data.DataError as e:  # an unknown set name
                print(f"error: {e}", file=sys.stderr)
                return 1
            bad = [n for n, r in res.items() if not r["ok"]]
            print(f"[coft] {len(res) - len(bad)} of {len(res)} sets ok" + (f"; failed: {', '.join(bad)}" if bad else ""))
            return 1 if bad else 0
        if a.cmd == "list":
            for c in chapters():
                ch = registry.get(c)
                print(f"{c:26s} {ch.title}\n{'':26s} notebook {ch.notebook.relative_to(REPO_ROOT)}; experiment "
                      f"{ch.experiment}; report {ch.report}; claims {', '.join(ch.claims) or '-'}")
            return 0
        if a.cmd == "build":
            build()
            return 0
        params = _parse_params(a.parameter, a.yaml)
        if a.cmd == "plan":
            from . import plan
            from ..foundation import costs
            try:
                return plan.main(a.chapter, a.profile, params, a.json, a.markdown, a.max_units)
            except (plan.PlanError, costs.CostError) as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
        if a.cmd == "submit":
            from . import submit
            a.params = params
            from ..foundation import data, series
            try:
                return submit.main(a)
            except (submit.SubmitError, series.SeriesError, data.DataError) as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
        if a.cmd == "run":
            run_notebook(a.notebook, a.profile, params, a.out, a.force, a.timeout)
            return 0
        from tqdm.auto import tqdm
        t0 = time.time()
        prof = profiles.get_profile(a.profile)
        names = [c for c in chapters() if prof.chapters is None or c in prof.chapters]
        out = a.out or (str(results.runs_dir() / a.profile / "_generated") if prof.reference else None)
        walls = {}
        for c in tqdm(names, desc=f"chapters [{a.profile}]", unit="chapter"):
            t1 = time.time()
            run_notebook(c, a.profile, params, out, a.force, a.timeout)
            walls[c] = round(time.time() - t1, 1)
        if prof.reference:  # a reference run: its records go to results/<profile>/, the site keeps its pages
            from . import reference
            dest = reference.export(a.profile, walls, command=" ".join(["python -m coft_utils", *sys.argv[1:]]))
            print(f"[coft] {a.profile}: reference records in {dest} (the claims page shows them as the "
                  f"'reference run' column; `make book` renders it); chapters {walls}", flush=True)
        else:
            build()
        print(f"[coft] book done in {time.time() - t0:.0f} s", flush=True)
        return 0
    except (RunError, profiles.ProfileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
