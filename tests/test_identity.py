"""Records are keyed by the weights, not by the checkpoint's label; data sums are measured.

A results unit carries ``"weights": models.identity(ckpt)``: a content fingerprint of a local
folder (cached by size, mtime, inode and ctime) or ``hub_id@commit`` for a hub checkpoint. So a
series whose labels are pointed at other weights recomputes, and an unchanged one reuses.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from coft_utils.foundation import checksums, data, evaluate, models, profiles, results, weights  # noqa: E402
from coft_utils.chapters import perturb  # noqa: E402
from coft_utils.book import run  # noqa: E402
from conftest import copy_data_set, small_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CH = "02_gaussian_sensitivity"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return small_tokenizer(tmp_path_factory.mktemp("tokcache"), 60_000, 300)


def _save(path, seed, tok=None, vocab=300):
    m = models.build_model(models.olmo_config("olmo-pico", vocab_size=vocab, max_len=64), seed=seed).eval()
    return models.save_model(m, path, tokenizer=tok)


# --------------------------------------------------------------------------- records follow weights
def test_changed_weights_are_recomputed_unchanged_reused(tok, tmp_runs, monkeypatch):
    root = tmp_runs
    a, b = _save(root / "ckA", 0, tok), _save(root / "ckB", 1, tok)
    spec = {"name": "tiny", "checkpoints": [{"label": "A", "tokens": 1e6, "path": str(a)},
                                            {"label": "B", "tokens": 2e6, "path": str(b)}],
            "meta": {"init_std": 0.02}}
    sfile = root / "tiny.json"
    sfile.write_text(json.dumps(spec))
    cfg = profiles.resolve(CH, "smoke", {"series": str(sfile), "gammas": [0.05], "compare_gammas": [],
                                         "n_seeds": 1, "n_blocks": 2, "seq_len": 32, "sources": ["wikitext"]})
    store = results.Store(CH, "smoke")
    df1 = perturb.sweep(str(sfile), cfg, store=store, progress=False)
    assert len(df1) == len(store.records()) == 4  # 2 checkpoints x (γ=0 + one γ x one seed)
    assert "weights" in df1.columns and "weights" in store.frame().columns
    assert set(df1.weights) == {models.identity(models.get_series(str(sfile)).checkpoints[i]) for i in (0, 1)}
    base = lambda df, lab: float(df[(df.checkpoint == lab) & (df.gamma == 0.0)].ppl.iloc[0])

    # unchanged weights: every record reused, nothing evaluated
    def boom(*a, **k):
        raise AssertionError("a unit with unchanged weights was recomputed")
    with monkeypatch.context() as m:
        m.setattr(evaluate, "perplexity", boom)
        df_same = perturb.sweep(str(sfile), cfg, store=store, progress=False)
    assert len(store.records()) == 4 and df_same.ppl.tolist() == df1.ppl.tolist()

    # the skeptic: same series name and labels, labels pointed at the other folders
    swapped = dict(spec, checkpoints=[dict(spec["checkpoints"][0], path=str(b)),
                                      dict(spec["checkpoints"][1], path=str(a))])
    sfile2 = root / "swapped.json"
    sfile2.write_text(json.dumps(swapped))
    df2 = perturb.sweep(str(sfile2), cfg, store=store, progress=False)
    assert len(store.records()) == 8  # every unit recomputed, none reused
    assert base(df2, "A") == pytest.approx(base(df1, "B"), rel=1e-6)  # A's number is now B's weights'
    assert base(df2, "A") != base(df1, "A")

    # retrained in place: the same folder and label, other weights of the same shape
    _save(a, 7, tok)
    df3 = perturb.sweep(str(sfile), cfg, store=store, progress=False)
    assert len(store.records()) == 10  # A's two units recomputed; B's reused
    assert base(df3, "A") != base(df1, "A") and base(df3, "B") == base(df1, "B")
    assert df3[df3.checkpoint == "A"].weights.iloc[0] != df1[df1.checkpoint == "A"].weights.iloc[0]
    with monkeypatch.context() as m:
        m.setattr(evaluate, "perplexity", boom)
        df4 = perturb.sweep(str(sfile), cfg, store=store, progress=False)
    assert df4.ppl.tolist() == df3.ppl.tolist() and len(store.records()) == 10


# --------------------------------------------------------------------------- local fingerprint
def test_identity_stable_and_sees_a_same_size_byte_with_mtime_restored(tmp_runs):
    d = _save(tmp_runs / "ck", 0)
    ck = models.Checkpoint("x", 1.0, path=str(d))
    i1 = models.identity(ck)
    assert i1 == models.identity(ck) == models.identity(str(d)) and len(i1) == 16
    cache = data.cache_dir() / "weights_fingerprint.json"
    assert str(d.absolute()) in json.loads(cache.read_text())
    weights._fp_memo.clear()  # a fresh process: from the JSON cache, not re-hashed
    real = weights._file_sha256
    try:
        weights._file_sha256 = lambda p: (_ for _ in ()).throw(AssertionError("re-hashed"))
        assert models.identity(ck) == i1
    finally:
        weights._file_sha256 = real
    f = d / "model.safetensors"
    st = f.stat()
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0x01  # one byte of tensor data (the header is at the start)
    time.sleep(0.02)  # past the file-system clock tick, so ctime moves
    with open(f, "r+b") as fh:  # in place: same inode, same size
        fh.write(bytes(raw))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = f.stat()
    assert (st2.st_size, st2.st_mtime_ns, st2.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    assert st2.st_ctime_ns != st.st_ctime_ns  # only the status-change time tells
    i2 = models.identity(ck)
    assert i2 != i1
    assert models.identity(ck) == i2


def test_missing_folder_names_checkpoint_and_path(tmp_runs):
    ck = models.Checkpoint("gone-10B", 1.0, path=str(tmp_runs / "nowhere"))
    with pytest.raises(models.SeriesError, match=r"gone-10B.*nowhere"):
        models.identity(ck)
    (tmp_runs / "empty").mkdir()
    with pytest.raises(models.SeriesError, match="safetensors"):
        models.identity(models.Checkpoint("e", 1.0, path=str(tmp_runs / "empty")))


# --------------------------------------------------------------------------- hub identity
def _fake_hub(root: Path, hub_id: str, refs: dict[str, str]) -> Path:
    repo = root / ("models--" + hub_id.replace("/", "--"))
    for ref, commit in refs.items():
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
        snap = repo / "snapshots" / commit
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "config.json").write_text("{}")
    return repo


def test_hub_identity_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    other = "fedcba9876543210fedcba9876543210fedcba98"
    _fake_hub(tmp_path / "hub", "org/name", {"main": COMMIT, "step1000": other + "\n"})
    ck = models.Checkpoint("main", 1.0, hub_id="org/name", revision="main")
    assert models.identity(ck) == f"org/name@{COMMIT}" == models.identity(ck)
    assert models.identity(models.Checkpoint("s", 1.0, hub_id="org/name")) == f"org/name@{COMMIT}"  # main
    assert models.identity(models.Checkpoint("1k", 1.0, hub_id="org/name", revision="step1000")) == f"org/name@{other}"
    # a 40-hex revision is the commit itself, cached or not
    pinned = "a" * 40
    assert models.identity(models.Checkpoint("p", 1.0, hub_id="org/absent", revision=pinned)) == f"org/absent@{pinned}"
    # unresolvable offline: a clear error naming id, revision and where it looked
    with pytest.raises(models.SeriesError) as e:
        models.identity(models.Checkpoint("late", 1.0, hub_id="org/name", revision="step9999"))
    msg = str(e.value)
    assert "org/name" in msg and "step9999" in msg and str(tmp_path / "hub") in msg
    # HF_HOME/hub is the fallback when HF_HUB_CACHE is unset
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    _fake_hub(tmp_path / "home" / "hub", "org/other", {"main": other})
    assert models.identity(models.Checkpoint("o", 1.0, hub_id="org/other")) == f"org/other@{other}"


# --------------------------------------------------------------------------- data checksums
_copy_set = copy_data_set


def test_checksums_are_measured_and_cached_by_inode_and_ctime(tmp_path, monkeypatch):
    monkeypatch.setenv("COFT_CACHE_DIR", str(tmp_path / "cache"))
    root = _copy_set(tmp_path, "copa")
    monkeypatch.setenv("COFT_DATA_DIR", str(root))
    f = root / "copa" / "copa.jsonl"
    import hashlib
    measured = hashlib.sha256(f.read_bytes()).hexdigest()
    assert data.checksums(["copa"]) == {"copa/copa.jsonl": measured}
    ent = json.loads(checksums._verified_cache().read_text())[str(f)]
    st = f.stat()
    assert ent == {"stamp": [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns], "sha256": measured}
    # a same-size change with mtime restored is caught (ctime moved), not served from the cache
    raw = bytearray(f.read_bytes())
    raw[10] ^= 0x01
    time.sleep(0.02)
    with open(f, "r+b") as fh:
        fh.write(bytes(raw))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(data.DataError, match="corrupted"):
        data.checksums(["copa"])


def test_malformed_sha256sums_line_names_file_line_and_text(tmp_path, monkeypatch):
    monkeypatch.setenv("COFT_CACHE_DIR", str(tmp_path / "cache"))
    root = _copy_set(tmp_path, "copa")
    sums = root / "SHA256SUMS"
    good = sums.read_text().splitlines()[0]
    sums.write_text(good + "\n\n" + "deadbeef  copa/copa.jsonl\n")
    monkeypatch.setenv("COFT_DATA_DIR", str(root))
    with pytest.raises(data.DataError) as e:
        data.verify("copa")
    msg = str(e.value)
    assert str(sums) in msg and "line 3" in msg and "deadbeef  copa/copa.jsonl" in msg


def test_verify_cli_ok_on_real_data_and_fails_on_a_flipped_byte(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COFT_CACHE_DIR", str(tmp_path / "cache"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("COFT_DATA_DIR", None)
    r = subprocess.run([sys.executable, "-m", "coft_utils", "verify"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(n in r.stdout for n in data.names()) and "FAILED" not in r.stdout
    root = _copy_set(tmp_path, "copa")
    monkeypatch.setenv("COFT_DATA_DIR", str(root))
    assert run.main(["verify", "copa"]) == 0
    f = root / "copa" / "copa.jsonl"
    raw = bytearray(f.read_bytes())
    raw[10] ^= 0x01
    f.write_bytes(bytes(raw))  # same size; the check ignores the cache anyway
    capsys.readouterr()
    assert run.main(["verify", "copa"]) == 1
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("copa "))
    assert "FAILED" in line and "corrupted" in line and str(f) in line
    assert run.main(["verify"]) == 1  # every registered set: the others are missing from this copy
    out = capsys.readouterr().out
    assert all(any(l.startswith(n + " ") for l in out.splitlines()) for n in data.names())
    assert "arc_easy/arc_easy.jsonl' is missing" in out
    assert run.main(["verify", "no_such_set"]) == 1 and "unknown data set" in capsys.readouterr().err
