"""Tests of the held-out sources of coft_utils.foundation.evaluate: one cached loader for gutenberg,
wikitext and c4 (atomic, validated cache files keyed per request), chapter 02's and chapter 03's C4
blocks (the same token ids as the two loaders they replace), and the one masked next-token NLL.

C4 is hub-only (``data.REGISTRY["c4"].local`` is False), so most tests here swap in a fake C4:
``hubdata.iter_texts`` (the new reader) and ``datasets.load_dataset`` (what the frozen copies of
the old chapter loaders below call) monkeypatched to yield the same fixed documents. The hub
origin itself (``origin="hub"``: C4 and WikiText-2 read from a hub-layout cache through
``hubdata``) is tested at the end on ``tests/hubcache_data``'s tiny copies.
"""
import multiprocessing as mp
import time
import warnings

import numpy as np
import pytest
import torch

from coft_utils.foundation import data, evaluate, models
from conftest import small_tokenizer  # noqa: E402

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there one all we can has their more").split()


def _fake_docs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 300)))) + "." for _ in range(n)]


DOCS = _fake_docs()


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return small_tokenizer(tmp_path_factory.mktemp("heldout_tok") / "cache", 100_000, 400)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COFT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "heldout"


@pytest.fixture
def fake_c4(monkeypatch):
    """C4 validation replaced by DOCS; counts how often the source is opened."""
    import datasets
    opened = []

    def load_dataset(name, *args, **kw):
        assert (name, args, kw) == ("allenai/c4", ("en",), {"split": "validation", "streaming": True})
        opened.append(1)
        return iter([{"text": d, "timestamp": "2019", "url": "x"} for d in DOCS])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    from coft_utils.foundation import hubdata  # the new reader: allenai/c4's own shards through hubdata

    def iter_texts(name, split, *a, **kw):
        assert (name, split) == ("c4", "validation")
        opened.append(1)
        return iter(DOCS)

    monkeypatch.setattr(hubdata, "iter_texts", iter_texts)
    return opened


# --------------------------------------------------------------------------- frozen copies of the old code
def _old_perturb_c4(tok, n_blocks, seq_len):
    """perturb.heldout(tok, "c4", ...) + perturb._c4_ids before the change (its cache left out)."""
    import datasets
    n_tokens = n_blocks * seq_len * 4
    ids, eos = [], tok.eos_token_id
    for rec in datasets.load_dataset("allenai/c4", "en", split="validation", streaming=True):
        ids.extend(tok(rec["text"], add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
        if len(ids) >= n_tokens:
            break
    ids = np.asarray(ids, dtype=np.int64)
    total = len(ids) // seq_len
    starts = np.linspace(0, total - 1, n_blocks).round().astype(np.int64) * seq_len
    return np.stack([ids[s:s + seq_len] for s in starts]), ids


def _old_finetune_c4(tok, n_blocks, seq_len):
    """finetune.ood_blocks(tok, cfg) for ood_source="c4" + finetune._c4_ids before the change."""
    import datasets
    n_tokens = n_blocks * seq_len
    ids = []
    for rec in datasets.load_dataset("allenai/c4", "en", split="validation", streaming=True):
        ids.extend(tok(rec["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        if len(ids) >= n_tokens:
            break
    arr = np.asarray(ids[:n_tokens], dtype=np.int64)
    return arr.reshape(n_blocks, seq_len).copy(), arr


def _old_source_ids(tok, source):
    """evaluate.source_ids before the change (its cache left out)."""
    if source == "gutenberg":
        texts = list(data.gutenberg_bodies("validation"))
    else:
        texts = ["".join(data.load("wikitext2_tokenized_valid_test", "test")["text"])]
    ids = []
    for text in texts:
        ids.extend(tok(text, add_special_tokens=False)["input_ids"])
        ids.append(tok.eos_token_id)
    return np.asarray(ids, dtype=np.int64)


def _old_blocks(ids, n_blocks, seq_len):
    total = len(ids) // seq_len
    starts = np.linspace(0, total - 1, n_blocks).round().astype(np.int64) * seq_len
    return np.stack([ids[s:s + seq_len] for s in starts])


class ByteTokenizer:
    """A tokenizer of UTF-8 bytes (eos 256): fast enough to read all 5 MB of Gutenberg twice."""
    eos_token_id = 256

    def get_vocab(self):
        return {f"b{i}": i for i in range(257)}

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": list(text.encode("utf-8"))}


# --------------------------------------------------------------------------- (d) local sources unchanged
@pytest.mark.parametrize("source,shapes", [("wikitext", [(96, 64), (4, 32), (1, 2)]),
                                           ("gutenberg", [(8, 64), (64, 128), (1000, 1024)])])
def test_local_blocks_equal_the_old_ones(tok, cache, source, shapes):
    """The whole-source blocks are the old ones (byte tokens: the C4 tests below use the BPE)."""
    tok = ByteTokenizer()
    old = _old_source_ids(tok, source)
    new = evaluate.heldout_ids(tok, source)
    assert new.dtype == np.int64 and np.array_equal(new, old)
    assert np.array_equal(evaluate.source_ids(tok, source), old)  # the old name, now cached
    for n, L in shapes:
        b = evaluate.heldout_blocks(tok, source, n, L)
        assert b.dtype == torch.int64 and tuple(b.shape) == (n, L)
        assert np.array_equal(b.numpy(), _old_blocks(old, n, L)), (n, L)
    # a prefix request is the prefix of the whole stream, in its own file
    assert np.array_equal(evaluate.heldout_ids(tok, source, 1000), old[:1000])
    assert len(list(cache.glob(f"{source}-*.npz"))) == 2


# --------------------------------------------------------------------------- (3) the two C4 requests
@pytest.mark.parametrize("n,L", [(16, 32), (5, 48), (1, 64)])
def test_c4_blocks_equal_both_old_loaders(tok, cache, fake_c4, n, L):
    old02, old02_ids = _old_perturb_c4(tok, n, L)
    old03, old03_ids = _old_finetune_c4(tok, 4 * n, L)
    b02 = evaluate.heldout_blocks(tok, "c4", n, L, oversample=4)
    b03 = evaluate.heldout_blocks(tok, "c4", 4 * n, L, oversample=1, whole_documents=False)
    assert np.array_equal(b02.numpy(), old02) and np.array_equal(b03.numpy(), old03)
    assert np.array_equal(evaluate.heldout_ids(tok, "c4", 4 * n * L, whole_documents=True), old02_ids)
    assert np.array_equal(evaluate.heldout_ids(tok, "c4", 4 * n * L), old03_ids)
    # the difference between the chapters: 02 keeps whole documents and spaces its blocks out
    assert len(old02_ids) >= len(old03_ids) == 4 * n * L
    assert np.array_equal(old02_ids[:len(old03_ids)], old03_ids)


def test_streamed_source_needs_a_count(tok, cache, fake_c4):
    with pytest.raises(ValueError, match="streamed"):
        evaluate.heldout_ids(tok, "c4")
    with pytest.raises(ValueError, match="streamed"):
        evaluate.heldout_blocks(tok, "c4", 4, 32)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="oversample"):
            evaluate.heldout_blocks(tok, "c4", 4, 32, oversample=bad)
        with pytest.raises(ValueError, match="n_tokens"):
            evaluate.heldout_ids(tok, "c4", bad)
    with pytest.raises(data.DataError, match="unknown held-out source"):
        evaluate.heldout_ids(tok, "c5", 10)
    assert not fake_c4  # refused before reading anything


# --------------------------------------------------------------------------- (a) no collision
@pytest.mark.parametrize("order", ["02_then_03", "03_then_02"])
def test_chapters_02_and_03_c4_requests_do_not_collide(tok, cache, fake_c4, order):
    """At sizes where n_blocks * seq_len * 4 (chapter 02) == ood_blocks * ood_seq_len (chapter 03),
    as at the paper presets (256 x 1024 x 4 == 1024 x 1024), the old loaders shared one file."""
    n02, n03, L = 16, 64, 32
    old02, _ = _old_perturb_c4(tok, n02, L)
    old03, _ = _old_finetune_c4(tok, n03, L)
    reqs = {"02": lambda: evaluate.heldout_blocks(tok, "c4", n02, L, oversample=4),
            "03": lambda: evaluate.heldout_blocks(tok, "c4", n03, L, oversample=1, whole_documents=False)}
    first, second = order.split("_then_")
    for _ in range(2):  # the second round reads both from the cache
        got = {first: reqs[first](), second: reqs[second]()}
        assert tuple(got["02"].shape) == (n02, L) and np.array_equal(got["02"].numpy(), old02)
        assert tuple(got["03"].shape) == (n03, L) and np.array_equal(got["03"].numpy(), old03)
    files = sorted(p.name for p in cache.glob("c4-*.npz"))
    assert len(files) == 2 and files[0] != files[1], files
    assert len(fake_c4) == 2 + 2  # two computed (and the two old-code references), then cached
    fp = evaluate.tokenizer_fingerprint(tok)
    assert evaluate.cache_path(tok, "c4", n02 * L * 4, True).name == f"c4-{fp}-n{n02 * L * 4}-docs-v{evaluate.CACHE_VERSION}.npz"
    assert evaluate.cache_path(tok, "c4", n03 * L, False).name == f"c4-{fp}-n{n03 * L}-trim-v{evaluate.CACHE_VERSION}.npz"


def test_old_cache_files_are_never_read(tok, cache, fake_c4):
    """A file left by the old loaders (``c4-<fp>-<n>.npy``, untrimmed) is not the new cache."""
    cache.mkdir(parents=True)
    n, L = 64, 32
    np.save(cache / f"c4-{evaluate.tokenizer_fingerprint(tok)}-{n * L}.npy", np.arange(n * L + 77))
    b = evaluate.heldout_blocks(tok, "c4", n, L, oversample=1, whole_documents=False)
    assert np.array_equal(b.numpy(), _old_finetune_c4(tok, n, L)[0])


# --------------------------------------------------------------------------- (c) corrupt files
def test_corrupt_partial_or_foreign_cache_file_is_recomputed(tok, cache, fake_c4):
    n = 3000
    good = evaluate.heldout_ids(tok, "c4", n)
    path = evaluate.cache_path(tok, "c4", n)
    whole = path.read_bytes()
    other = evaluate.cache_path(tok, "c4", n, whole_documents=True)
    evaluate.heldout_ids(tok, "c4", n, whole_documents=True)
    foreign = other.read_bytes()
    # header cut, half a file, garbage, one flipped data byte, and another request's (valid) file
    for bad in (whole[:40], whole[:len(whole) // 2], b"\0garbage" * 100, None, foreign):
        if bad is None:
            buf = bytearray(whole)
            buf[len(buf) // 3] ^= 0xFF  # inside the ids array: only the checksum can tell
            bad = bytes(buf)
        path.write_bytes(bad)
        opened = len(fake_c4)
        with pytest.warns(UserWarning, match="not valid"):
            ids = evaluate.heldout_ids(tok, "c4", n)
        assert np.array_equal(ids, good) and len(fake_c4) == opened + 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert np.array_equal(evaluate.heldout_ids(tok, "c4", n), good)  # rewritten: valid again
    assert not list(cache.glob("*.tmp"))


# --------------------------------------------------------------------------- (b) two processes at once
def _writer(path, ids, meta, start, rounds, errors):
    try:
        start.wait()
        for _ in range(rounds):
            evaluate._atomic_save(path, ids, meta)
    except BaseException as e:  # noqa: BLE001
        errors.put(repr(e))


def test_concurrent_writers_never_expose_a_partial_file(tmp_path):
    """Two processes rewrite one cache entry over and over while this one reads it: a reader sees
    no file or a complete, valid one; never an exception or a partial array."""
    ctx = mp.get_context("fork")
    path = tmp_path / "heldout" / "race.npz"
    ids = np.arange(1_500_000, dtype=np.int64)  # 12 MB: a non-atomic write would be caught half-done
    expect = {"version": evaluate.CACHE_VERSION, "source": "c4", "tokenizer": "x", "n_tokens": len(ids), "mode": "trim"}
    meta = {**expect, "length": len(ids), "sha256": evaluate._sha(ids), "exhausted": False}
    start, errors = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(path, ids, meta, start, 15, errors)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    seen = absent = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # _read warns on an invalid file: make that a failure
        while any(p.is_alive() for p in procs):
            got = evaluate._read(path, expect)
            if got is None:
                assert not path.exists() or evaluate._read(path, expect) is not None
                absent += 1
            else:
                assert np.array_equal(got, ids)
                seen += 1
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert errors.empty()
    assert seen > 0
    assert np.array_equal(evaluate._read(path, expect), ids)
    assert [q.name for q in path.parent.iterdir()] == ["race.npz"]  # no temp file left


def _loader(n, start, out):
    try:
        start.wait()
        out.put(("ok", evaluate.heldout_ids(_loader.tok, "c4", n).tolist()))
    except BaseException as e:  # noqa: BLE001
        out.put(("error", repr(e)))


def test_two_processes_load_the_same_entry_at_once(tok, cache, monkeypatch):
    """Two processes (DDP ranks) ask for the same C4 entry on a cold cache: both get the right
    ids, no exception; the lock makes one of them compute it."""
    def slow_docs():
        for d in DOCS:
            time.sleep(0.001)
            yield d
    monkeypatch.setitem(evaluate.HELDOUT, "c4", evaluate.HeldoutSource("c4", "c4", "validation", slow_docs, True))
    n = 4000
    expect = evaluate._tokenize(tok, "c4", n, False)[0]
    _loader.tok = tok
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_loader, args=(n, start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    res = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert [r[0] for r in res] == ["ok", "ok"], res
    for _, got in res:
        assert got == expect.tolist()
    assert np.array_equal(evaluate.heldout_ids(tok, "c4", n), expect)
    assert sorted(p.suffix for p in cache.iterdir()) == [".lock", ".npz"]


# --------------------------------------------------------------------------- masked NLL
@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return models.build_model(models.olmo_config("olmo-pico", vocab_size=len(tok), max_len=64), seed=0).eval()


def _reference_nll(model, x, labels):
    logits = model(input_ids=x).logits[:, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, x[:, 1:].unsqueeze(-1)).squeeze(-1)
    keep = labels[:, 1:] != -100
    return -(lp.double() * keep).sum().item(), int(keep.sum())


def test_masked_nll_mask_labels_and_reductions_agree(model):
    g = torch.Generator().manual_seed(3)
    x = torch.randint(2, 300, (5, 24), generator=g)
    mask = torch.rand(5, 24, generator=g) < 0.5
    labels = x.masked_fill(~mask, -100)
    with torch.inference_mode():
        ref_total, ref_count = _reference_nll(model, x, labels)
    total, count = evaluate.masked_nll(model, x, mask)
    assert (total, count) == evaluate.masked_nll(model, x, labels=labels)
    assert count == ref_count == int(mask[:, 1:].sum())
    assert total == pytest.approx(ref_total, rel=1e-5)
    seq, seq_n = evaluate.masked_nll(model, x, mask, reduction="sequence")
    tok_nll, scored = evaluate.masked_nll(model, x, mask, reduction="token")
    assert seq.shape == (5,) and tok_nll.shape == scored.shape == (5, 23)
    assert torch.equal(seq_n, scored.sum(-1)) and torch.equal(scored, mask[:, 1:])
    assert bool((tok_nll[~scored] == 0).all())
    assert float(seq.sum()) == pytest.approx(total, rel=1e-5)
    assert torch.allclose(tok_nll.sum(-1), seq)
    # no mask: every token after the first; equals the perplexity's own sum
    full_total, full_count = evaluate.masked_nll(model, x)
    assert full_count == 5 * 23
    assert evaluate.nll_sum(model, x, batch_size=5) == (full_total, full_count)
    with pytest.raises(ValueError, match="reduction"):
        evaluate.masked_nll(model, x, reduction="mean")
    with pytest.raises(ValueError, match="not both"):
        evaluate.masked_nll(model, x, mask, labels=labels)


def test_masked_nll_padding_and_attention_mask(model):
    """A right-padded batch scores each sequence as it would be scored alone."""
    g = torch.Generator().manual_seed(4)
    a, b = torch.randint(2, 300, (1, 20), generator=g), torch.randint(2, 300, (1, 12), generator=g)
    x = torch.full((2, 20), 1, dtype=torch.long)
    att = torch.zeros((2, 20), dtype=torch.long)
    x[0], att[0] = a[0], 1
    x[1, :12], att[1, :12] = b[0], 1
    seq, n = evaluate.masked_nll(model, x, att.bool(), attention_mask=att, reduction="sequence")
    alone_a = evaluate.masked_nll(model, a)
    alone_b = evaluate.masked_nll(model, b)
    assert n.tolist() == [19, 11]
    assert float(seq[0]) == pytest.approx(alone_a[0], rel=1e-5)
    assert float(seq[1]) == pytest.approx(alone_b[0], rel=1e-5)


def test_perplexity_uses_masked_nll(model, monkeypatch):
    x = torch.randint(2, 300, (6, 16), generator=torch.Generator().manual_seed(5))
    r = evaluate.perplexity(model, x, batch_size=4)
    total, count = evaluate.masked_nll(model, x[:4])
    t2, c2 = evaluate.masked_nll(model, x[4:])
    assert r["n_tokens"] == count + c2 == 6 * 15 and r["loss"] == (total + t2) / (count + c2)
    assert not r["diverged"]
    monkeypatch.setattr(evaluate, "masked_nll", lambda *a, **k: (float("nan"), 15))
    r = evaluate.perplexity(model, x, batch_size=4)
    assert r["diverged"] and r["ppl"] == float("inf") and r["loss"] == float("inf")


# --------------------------------------------------------------------------- the hub origin (paper)
def test_hub_origin_reads_the_hub_cache_and_never_shares_a_cache_file(tok, cache, tmp_path, monkeypatch):
    from huggingface_hub import constants
    from coft_utils.foundation import hubdata
    from tests.hubcache_data import add_paper_datasets
    hub = tmp_path / "hub"
    add_paper_datasets(hub, n=40)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    texts = list(hubdata.iter_texts("c4", "validation"))
    want = []
    for t in texts:
        want += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    got = evaluate.heldout_ids(tok, "c4", 500)
    assert len(got) == 500 and got.tolist() == want[:500]  # allenai/c4's own validation shards, in order
    wk = evaluate.heldout_ids(tok, "wikitext", origin="hub")
    rows = hubdata.load("wikitext", "test")["text"]
    assert wk.tolist() == tok("".join(rows), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert evaluate.cache_path(tok, "wikitext", origin="hub").name.startswith("wikitext-hub-")
    assert evaluate.cache_path(tok, "wikitext").name.startswith("wikitext-")  # the local name is unchanged
    assert evaluate.cache_path(tok, "c4", 500, origin="hub") == evaluate.cache_path(tok, "c4", 500)
    with pytest.raises(data.DataError, match=r"'gutenberg' has no hub copy"):
        evaluate.heldout_ids(tok, "gutenberg", origin="hub")
    with pytest.raises(ValueError, match=r"unknown origin 'cloud'; allowed: local, hub"):
        evaluate.heldout_ids(tok, "wikitext", origin="cloud")
    assert evaluate.data_names(["wikitext", "c4"], "hub") == [] and evaluate.data_names(["wikitext"]) == \
        ["wikitext2_tokenized_valid_test"]
