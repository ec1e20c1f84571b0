
import pytest

from coft_utils.foundation import checksums, data
from conftest import copy_data_set  # noqa: E402
LOCAL = data.names()


@pytest.mark.parametrize("name", LOCAL)
def test_every_registered_set_loads_with_its_counts(name):
    s = data.spec(name)
    dd = data.load(name)
    assert set(dd) == set(s.splits)
    for split, n in s.counts.items():
        assert len(dd[split]) == n, (name, split)
        assert set(s.schema) <= set(dd[split].column_names), (name, split, dd[split].column_names)
    if "label" in s.schema and s.label_names:
        for split in dd:
            labels = set(dd[split]["label"])
            assert labels <= set(range(len(s.label_names))), (name, split, labels)
            assert len(labels) == len(s.label_names), (name, split, labels)  # every class present


def test_text_sets_are_parsed_not_raw():
    trec = data.load("trec", "test")
    assert not any(t.split(" ")[0].count(":") for t in trec["text"][:50])  # label prefix removed
    sst = data.load("sst_sentence_level", "validation")
    assert sst[0]["text"].startswith("one long string")  # "0 one long string of cliches ."
    assert sst[0]["label"] == 0
    mr = data.load("mr", "all")
    assert "é" in "".join(mr["text"]) or all(t.isascii() for t in mr["text"])  # latin-1 decoded


def test_gutenberg_bodies_have_no_boilerplate():
    books = list(data.gutenberg_bodies("validation"))
    assert len(books) == data.spec("gutenberg_top100_authors").counts["validation"]
    for b in books:
        low = b.lower()
        assert "project gutenberg" not in low
        assert "*** start of" not in low and "*** end of" not in low
        assert len(b) > 10_000
    few = list(data.gutenberg_bodies("train", max_books=3))
    assert len(few) == 3


_copy_set = copy_data_set


def test_corrupted_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("COFT_CACHE_DIR", str(tmp_path / "cache"))
    root = _copy_set(tmp_path, "copa")
    monkeypatch.setenv("COFT_DATA_DIR", str(root))
    assert len(data.load("copa", "validation")) == 100  # the intact copy loads
    f = root / "copa" / "copa.jsonl"
    raw = bytearray(f.read_bytes())
    raw[10] = ord("X") if raw[10] != ord("X") else ord("Y")
    f.write_bytes(bytes(raw))
    with pytest.raises(data.DataError) as e:
        data.load("copa", "validation")
    msg = str(e.value)
    assert "copa/copa.jsonl" in msg and "corrupted" in msg and str(f) in msg and "COFT_DATA_DIR" in msg


def test_missing_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("COFT_CACHE_DIR", str(tmp_path / "cache"))
    root = _copy_set(tmp_path, "copa")
    (root / "copa" / "copa.jsonl").unlink()
    monkeypatch.setenv("COFT_DATA_DIR", str(root))
    with pytest.raises(data.DataError, match="missing: looked for .*copa.jsonl"):
        data.load("copa")
    monkeypatch.setenv("COFT_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(data.DataError, match="SHA256SUMS"):
        data.load("copa")


def test_checksum_is_cached_after_first_success(tmp_path, monkeypatch):
    monkeypatch.setenv("COFT_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = checksums._sha256
    monkeypatch.setattr(checksums, "_sha256", lambda p: calls.append(p) or real(p))
    data.verify("gsm8k")
    first = len(calls)
    assert first == len(data.spec("gsm8k").files())
    data.verify("gsm8k")
    assert len(calls) == first


def test_unknown_set_and_split_are_clear_errors():
    with pytest.raises(data.DataError, match="unknown data set 'nope'.*registered: .*gsm8k"):
        data.load("nope")
    with pytest.raises(data.DataError, match="no split 'dev'; allowed: train, test"):
        data.load("gsm8k", "dev")
    with pytest.raises(data.DataError, match="hub-only"):
        data.load("c4")


def test_every_shared_folder_is_registered():
    folders = {p.name for p in data.data_dir().iterdir() if p.is_dir()}
    assert folders == set(LOCAL), folders ^ set(LOCAL)
    for n in LOCAL:
        assert data.spec(n).hub  # every set knows its hub name for paper scale


def test_checksum_names_stay_importable_from_data():
    """The checksum machinery lives in ``checksums``; ``data`` re-exports the very same functions."""
    for name in ("verify_files", "verify", "verify_all", "checksums", "file_path"):
        assert getattr(data, name) is getattr(checksums, name), name
    assert all(hasattr(data, n) for n in data.__all__)


@pytest.mark.parametrize("first", ["checksums", "data"])
def test_data_and_checksums_import_in_either_order(first):
    import subprocess
    import sys
    code = (f"import coft_utils.foundation.{first}; from coft_utils.foundation import checksums, data; "
            "assert data.verify is checksums.verify and checksums.spec is data.spec")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
