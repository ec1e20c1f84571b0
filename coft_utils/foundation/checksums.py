"""Checksums of the data sets: every file checked against ``SHA256SUMS`` before it is read.

The sums are *measured* on the files and compared with the expected ``SHA256SUMS`` lines of the
data folder (:func:`coft_utils.foundation.data.data_dir`); a file's check is cached in
``cache_dir()/verified_sha256.json``, keyed by its size, modification time, inode and
status-change time, after its first success::

    from coft_utils.foundation import data
    data.verify("gsm8k")                          # {relative path: absolute path}, verified
    data.file_path("mr/rt-polarity.neg")          # one file, verified
    data.checksums(["mr", "gsm8k"])               # {file: measured sha256} for result provenance
    data.verify_all()                             # re-hash every file of every set (no cache)

Every public name here (``verify_files``, ``verify``, ``verify_all``, ``checksums``,
``file_path``) is also importable from :mod:`coft_utils.foundation.data`, where it lived before
and where callers use it. A missing or corrupted file raises
:class:`~coft_utils.foundation.data.DataError` naming the file, where it looked, and how to fix it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path

__all__ = ["verify_files", "verify", "verify_all", "checksums", "file_path"]

_lock = threading.Lock()
_SUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](\S.*)")


def _expected_sums(root: Path) -> dict[str, str]:
    sums_file = root / "SHA256SUMS"
    if not sums_file.is_file():
        raise DataError(f"no SHA256SUMS in {root} (looked for {sums_file}); set COFT_DATA_DIR to "
                        f"the folder that holds the shared data sets, or place them at "
                        f"{REPO_ROOT.parent / 'shared' / 'data'}")
    out = {}
    for i, line in enumerate(sums_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        m = _SUM_LINE.fullmatch(line.rstrip("\r"))
        if not m:
            raise DataError(f"{sums_file} line {i} is malformed: {line!r}; expected "
                            f"'<64 hex sha256>  <set>/<file>' (as written by sha256sum)")
        out[m.group(2).strip()] = m.group(1).lower()
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified_cache() -> Path:
    return cache_dir() / "verified_sha256.json"


def file_path(rel: str) -> Path:
    """Absolute path of ``<set>/<file>`` under the data folder, checked and verified."""
    return verify_files([rel])[rel]


def _stamp(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def verify_files(rels: list[str], rehash: bool = False) -> dict[str, Path]:
    """Check files against ``SHA256SUMS``; return {relative path: absolute path}. A file whose
    stat stamp (size, mtime, inode, ctime) matches its cache entry is not re-read unless
    ``rehash``; the cache holds the sha256 *measured* for that stamp."""
    return {rel: v[0] for rel, v in _verify(rels, rehash).items()}


def _verify(rels: list[str], rehash: bool = False) -> dict[str, tuple[Path, str]]:
    """{relative path: (absolute path, measured sha256)} of verified files."""
    root = data_dir()
    expected = _expected_sums(root)
    with _lock:
        try:
            cache = json.loads(_verified_cache().read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            cache = {}
        out, dirty = {}, False
        for rel in rels:
            p = root / rel
            set_name = rel.split("/")[0]
            how = (f"copy the '{set_name}' folder (with its SOURCE.md and its line in SHA256SUMS) "
                   f"into {root}, or point COFT_DATA_DIR at a folder that holds it; at paper scale "
                   f"load it from the hub as '{REGISTRY[set_name].hub if set_name in REGISTRY else '?'}'")
            if not p.is_file():
                raise DataError(f"data file {rel!r} is missing: looked for {p}. To fix: {how}.")
            if rel not in expected:
                raise DataError(f"data file {rel!r} has no line in {root / 'SHA256SUMS'}; "
                                f"cannot verify it. To fix: {how}.")
            st = p.stat()
            key = str(p)
            ent = cache.get(key)
            stamp = _stamp(st)
            if (rehash or not isinstance(ent, dict) or ent.get("stamp") != stamp
                    or ent.get("sha256") != expected[rel]):
                got = _sha256(p)
                if got != expected[rel]:
                    cache.pop(key, None)
                    _write_cache(cache)
                    raise DataError(f"data file {rel!r} at {p} is corrupted: sha256 {got} != "
                                    f"expected {expected[rel]} (from SHA256SUMS). To fix: {how}.")
                if _stamp(p.stat()) == stamp:  # unchanged while it was read
                    cache[key] = {"stamp": stamp, "sha256": got}
                    dirty = True
                ent = {"sha256": got}
            out[rel] = (p, ent["sha256"])
        if dirty:
            _write_cache(cache)
    return out


def _write_cache(cache: dict) -> None:
    tmp = _verified_cache().with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(cache, indent=0))
    os.replace(tmp, _verified_cache())


def verify(name: str) -> dict[str, Path]:
    """Verify every file of a registered set; return {relative path: absolute path}."""
    s = spec(name)
    if not s.local:
        raise DataError(f"data set {name!r} is hub-only ({s.hub}); it cannot be used offline")
    return verify_files(s.files())


def checksums(names_: list[str]) -> dict[str, str]:
    """{file: sha256} of the given sets, for result provenance: the sums *measured* on the files
    (re-read when a file's size, mtime, inode or ctime changed since it was last hashed), each
    equal to its ``SHA256SUMS`` line or the call raises :class:`DataError`."""
    out = {}
    for n in names_:
        s = spec(n)
        if not s.local:
            raise DataError(f"data set {n!r} is hub-only ({s.hub}); it cannot be used offline")
        out.update({rel: v[1] for rel, v in _verify(s.files()).items()})
    return out


def verify_all(rehash: bool = True, names_: list[str] | None = None, echo: bool = False) -> dict[str, dict]:
    """Re-hash every file of every local registered set (ignoring the cache when ``rehash``).

    Returns {set: {"ok": bool, "files": n, "error": message or None}}; ``echo`` prints one line
    per set. A missing ``SHA256SUMS`` fails every set with the same message."""
    out = {}
    for n in names_ if names_ is not None else names():
        s = spec(n)
        try:
            if not s.local:
                raise DataError(f"data set {n!r} is hub-only ({s.hub}); nothing to verify offline")
            _verify(s.files(), rehash=rehash)
            out[n] = {"ok": True, "files": len(s.files()), "error": None}
        except DataError as e:
            out[n] = {"ok": False, "files": len(s.files()), "error": str(e)}
        if echo:
            r = out[n]
            print(f"{n:32s} {r['files']:3d} files  {'ok' if r['ok'] else 'FAILED: ' + r['error']}", flush=True)
    return out


# at the end, so that either of data and checksums can be imported first (data re-exports the
# names above at its own end): only the functions above use these, at call time
from .data import REGISTRY, REPO_ROOT, DataError, cache_dir, data_dir, names, spec  # noqa: E402
