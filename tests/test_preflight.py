"""Pre-flight and .bin loading, offline, on a local hub cache with the real repository ids and
revision names (tests/hubcache.py): three OLMo-1B-hf branches, one LLM360/Amber ``.bin`` branch,
and the duplicate-weight pair of allenai/OLMo-2-1124-7B that allenai/OLMo issue #915 reports."""
import hashlib
import shutil
from types import SimpleNamespace

import pytest
import torch

from coft_utils.foundation import data, models, preflight, series, weights
from tests import hubcache

OLMO1B = ("step10000-tokens41B", "step40000-tokens167B", "step117850-tokens494B")
DUP = ("stage1-step101000-tokens424B", "stage1-step300000-tokens1259B")  # allenai/OLMo #915


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("h1hub")
    tok = models.train_tokenizer(data.gutenberg_bodies("validation", max_chars=30_000), 300)
    src = [hubcache.tiny_olmo(root / f"w{i}", seed=i, tokenizer=tok, max_len=32) for i in range(3)]
    cache = root / "hub"
    for rev, s in zip(OLMO1B, src):
        hubcache.add_model(cache, "allenai/OLMo-1B-hf", rev, s)
    hubcache.add_model(cache, "LLM360/Amber", "ckpt_010", src[0], bin=True)
    hubcache.add_model(cache, "allenai/OLMo-2-1124-7B", "stage1-step50000-tokens210B", src[1])
    for rev in DUP:                                   # same weights under two branch names
        hubcache.add_model(cache, "allenai/OLMo-2-1124-7B", rev, src[2])
    return SimpleNamespace(root=root, cache=cache, src=src, tok=tok)


@pytest.fixture
def offline(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub.cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("COFT_CACHE_DIR", str(tmp_path / "cache"))
    return hub


def _olmo1b():
    return series.SERIES["olmo-1b"].select([c.label for c in series.SERIES["olmo-1b"] if c.revision in OLMO1B])


def _dup_series():
    ck = lambda step, rev: {"label": series._hub_label(step * 4_194_304), "tokens": step * 4_194_304,
                            "hub_id": "allenai/OLMo-2-1124-7B", "revision": rev}
    return {"name": "olmo-2-7b-with-dups", "checkpoints": [
        ck(50000, "stage1-step50000-tokens210B"), ck(101000, DUP[0]), ck(300000, DUP[1])]}


def test_offline_report_has_commits_and_lfs_sha256(offline):
    s = _olmo1b()
    assert [c.revision for c in s] == list(OLMO1B)
    rep = preflight.check(s)
    assert rep.ok and rep.mode == "offline" and len(rep.checkpoints) == 3
    for c, src in zip(rep.checkpoints, offline.src):
        ref = hubcache.repo_folder(offline.cache, "allenai/OLMo-1B-hf") / "refs" / c.revision
        assert c.commit == ref.read_text()
        sha = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
        assert c.files == {"model.safetensors": sha}
    assert "step117850-tokens494B" in rep.summary()


def test_missing_revisions_are_named(offline):
    with pytest.raises(preflight.PreflightError) as e:
        preflight.check("olmo-1b")
    msg = str(e.value)
    assert "step330000-tokens1383B" in msg and "step738020-tokens3094B" in msg
    assert "not in the local cache" in msg and "download it first or run online" in msg
    assert "step10000-tokens41B" not in msg                          # present: not named
    assert len(e.value.report.missing) == len(series.SERIES["olmo-1b"]) - 3
    # check_revisions reads the same cache offline
    miss = series.check_revisions(series.SERIES["olmo-1b"])["allenai/OLMo-1B-hf"]
    assert "step330000-tokens1383B" in miss and not set(OLMO1B) & set(miss)


def test_duplicate_weight_pair_is_refused_by_name(offline):
    with pytest.raises(preflight.PreflightError) as e:
        preflight.check(_dup_series())
    msg = str(e.value)
    assert "byte-identical weights" in msg
    assert "424B (stage1-step101000-tokens424B) and 1.26T (stage1-step300000-tokens1259B)" in msg
    assert "stage1-step50000-tokens210B" not in msg
    (group,) = e.value.report.duplicates
    assert [c.revision for c in group] == list(DUP)
    # dropping one of the pair passes
    ok = preflight.check(series.load(_dup_series()).select(["210B", "424B"]))
    assert ok.ok and not ok.duplicates


def _mock_hub_from_cache(monkeypatch, cache):
    """HfApi's refs and tree calls, answered from the local cache as the hub would answer them."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import GitRefInfo, GitRefs, RepoFile
    calls = []

    def list_repo_refs(self, repo_id, **kw):
        calls.append(("refs", repo_id))
        refs = hubcache.repo_folder(cache, repo_id) / "refs"
        return GitRefs(branches=[GitRefInfo(name=p.name, ref=f"refs/heads/{p.name}", target_commit=p.read_text())
                                 for p in sorted(refs.iterdir())], converts=[], tags=[])

    def list_repo_tree(self, repo_id, path_in_repo=None, *, recursive=False, expand=False, revision=None, **kw):
        calls.append(("tree", repo_id, revision))
        snap = hubcache.repo_folder(cache, repo_id) / "snapshots" / revision
        for p in sorted(snap.rglob("*")):
            blob = p.resolve()
            lfs = {"oid": blob.name, "size": blob.stat().st_size, "pointerSize": 134} \
                if p.name.endswith(hubcache.WEIGHT_SUFFIXES) else None
            yield RepoFile(path=str(p.relative_to(snap)), size=blob.stat().st_size, oid="0" * 40, lfs=lfs)

    monkeypatch.setattr(HfApi, "list_repo_refs", list_repo_refs)
    monkeypatch.setattr(HfApi, "list_repo_tree", list_repo_tree)
    monkeypatch.setattr(HfApi, "hf_hub_download", lambda *a, **k: pytest.fail("pre-flight downloads nothing"),
                        raising=False)
    return calls


def test_online_path_gives_the_same_report_as_the_offline_one(offline, monkeypatch):
    want = preflight.check(_dup_series(), raise_error=False)
    want1 = preflight.check(_olmo1b())
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls = _mock_hub_from_cache(monkeypatch, offline.cache)
    got = preflight.check(_dup_series(), raise_error=False)
    assert got.mode == "online" and got.checkpoints == want.checkpoints and got.duplicates == want.duplicates
    assert preflight.check(_olmo1b(), online=True).checkpoints == want1.checkpoints
    assert sum(1 for c in calls if c[0] == "refs") == 2             # once per repository and check
    with pytest.raises(preflight.PreflightError, match="no branch or tag 'step330000-tokens1383B'"):
        preflight.check("olmo-1b", online=True)


def test_bin_branch_loads_through_safe_loading(offline, monkeypatch):
    amber = series.SERIES["amber"].checkpoints[0]
    assert (amber.hub_id, amber.revision) == ("LLM360/Amber", "ckpt_010")
    snap = weights.cached_snapshot(amber.hub_id, amber.revision)[1]
    assert sorted(p.name for p in snap.glob("*.bin")) == ["pytorch_model.bin"] and not list(snap.glob("*.safetensors"))
    from transformers import AutoModelForCausalLM
    seen = {}
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *a, **kw):
        seen.update(kw)
        return real(cls, *a, **kw)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    m = models.load_model(amber)
    assert seen["use_safetensors"] is False and seen["weights_only"] is True and seen["trust_remote_code"] is False
    seen.clear()
    ref = models.load_model(models.Checkpoint("src", 1, path=str(offline.src[0])))
    assert seen["use_safetensors"] is True and "weights_only" not in seen    # safetensors: no torch.load
    x = offline.tok(["It was the best of times."], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(m(x).logits, ref(x).logits)
    rep = preflight.check(series.SERIES["amber"].select(["38B"]))
    assert list(rep.checkpoints[0].files) == ["pytorch_model.bin"]


def test_safetensors_win_over_bin_and_no_weights_is_named(tmp_path):
    assert weights.weight_format(["config.json", "pytorch_model.bin", "model.safetensors"]) == "safetensors"
    assert weights.weight_format(["pytorch_model-00001-of-00002.bin", "config.json"]) == "bin"
    assert weights.weight_format(["config.json"]) is None
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(series.SeriesError, match="holds no weights"):
        models.load_model(models.Checkpoint("empty", 1, path=str(tmp_path)))


def test_check_config_local_series_uses_fingerprints(offline, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(offline.src[0], a)
    shutil.copytree(offline.src[0], b)                 # same weights, later tokens
    spec = series.CheckpointSeries("mine", (series.Checkpoint("1B", 1e9, path=str(a)),
                                            series.Checkpoint("2B", 2e9, path=str(b)))).save(tmp_path / "mine.json")
    cfg = SimpleNamespace(series=str(spec), checkpoints=(), profile="gpu", schedule="cosine")
    with pytest.raises(preflight.PreflightError, match=r"checkpoints 1B \(.*/a\) and 2B \(.*/b\) have byte-identical"):
        preflight.check_config(cfg)
    rep = preflight.check_config(SimpleNamespace(**{**vars(cfg), "checkpoints": ("1B",)}))
    assert rep.mode == "local" and rep.ok and list(rep.checkpoints[0].files) == ["(fingerprint)"]
    with pytest.raises(series.SeriesError, match="has no 'series' field"):
        preflight.check_config(SimpleNamespace(profile="gpu"))


class _Evil:
    """Unpickling this opens (creates) a file: code that weights_only=True must refuse to run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_bin_with_pickled_code_is_refused_not_run(offline, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(offline.src[0] / "config.json", bad / "config.json")
    marker = tmp_path / "pwned"
    torch.save({"model.embed_tokens.weight": torch.zeros(2, 2), "x": _Evil(str(marker))}, bad / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|unsupported global"):
        models.load_model(models.Checkpoint("bad", 1, path=str(bad)))
    assert not marker.exists()


def test_online_unknown_repository_is_named_missing(offline, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    def no_repo(self, repo_id, **kw):
        err = RepositoryNotFoundError.__new__(RepositoryNotFoundError)   # as the hub answers a 404
        Exception.__init__(err, f"404 Client Error: Repository Not Found for {repo_id}")
        raise err
    monkeypatch.setattr(HfApi, "list_repo_refs", no_repo)
    with pytest.raises(preflight.PreflightError, match="repository me/gone not found on the hub"):
        preflight.check({"name": "x", "checkpoints": [{"label": "a", "tokens": 1, "hub_id": "me/gone",
                                                        "revision": "step1"}]}, online=True)


def test_check_config_suite_never_trains(offline, monkeypatch, tmp_path):
    from coft_utils.foundation import registry
    asked = []
    built = series.CheckpointSeries("suite-gpu", (series.Checkpoint("1B", 1e9, path=str(offline.src[0])),
                                                  series.Checkpoint("2B", 2e9, path=str(offline.src[1]))))

    class Exp:
        def cached_suite(self, profile, schedule, seed, overrides):
            asked.append((profile, schedule, overrides))
            return self.have

        def get_suite(self, *a, **k):
            pytest.fail("pre-flight must not train the suite")
    exp = Exp()
    monkeypatch.setattr(registry, "experiment", lambda name: exp)
    cfg = SimpleNamespace(series="suite", checkpoints=(), profile="gpu", schedule="cosine", suite_model="olmo-30m")
    exp.have = None
    rep = preflight.check_config(cfg)
    assert rep.mode == "skipped" and rep.ok and "not built yet" in rep.note
    exp.have = built
    rep = preflight.check_config(cfg)
    assert rep.mode == "local" and rep.ok and [c.label for c in rep.checkpoints] == ["1B", "2B"]
    assert asked == [("gpu", "cosine", {"model": "olmo-30m"})] * 2
