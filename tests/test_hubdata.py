"""hubdata: every registered hub set read offline from a cache laid out like the hub
(``tests/hubcache_data.add_paper_datasets``), with the local schema; clear errors otherwise."""
import pytest

from coft_utils.foundation import data, hubdata, profiles
from tests import hubcache
from tests.hubcache_data import add_paper_datasets

# hub set -> (local data set, splits present in both)
BOTH = {"gsm8k": ("gsm8k", ("train", "test")), "humaneval": ("humaneval", ("test",)),
        "hh_rlhf": ("hh_rlhf", ("test",)), "sst2": ("sst2_glue", ("validation",)),
        "wikitext": ("wikitext2_tokenized_valid_test", ("validation", "test"))}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubdata") / "hub"
    add_paper_datasets(root, n=8)
    return root


@pytest.fixture
def hub(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return cache


def test_every_registered_set_loads_offline_from_its_real_layout(hub):
    for name, hs in hubdata.REGISTRY.items():
        for split in hs.all_splits():
            sharded = split in hs.shards
            ds = hubdata.load(name, split, max_files=2 if sharded else None)
            per_file = 2 if sharded else len(hs.splits[split])
            assert len(ds) == 8 * per_file, (name, split)
            if hs.schema:
                assert set(ds.column_names) == set(hs.schema), (name, split)


@pytest.mark.parametrize("name", sorted(BOTH))
def test_schema_equals_the_local_one(hub, name):
    local, splits = BOTH[name]
    for split in splits:
        h, l = hubdata.load(name, split), data.load(local, split)
        assert h.features == l.features, (name, split)
        assert hubdata.load(name, split, source="local").features == l.features
        assert len(hubdata.load(local, split, source="local")) == len(l)  # the local name works too


def test_parsed_records(hub):
    sst = hubdata.load("sst2", "validation")
    assert sst[1] == {"text": sst[1]["text"].strip(), "label": 1}  # sentence stripped, label kept
    assert hubdata.load("sst2", "test")["label"] == [-1] * 8  # the hub hides SST-2 test labels
    tulu = hubdata.load("tulu", "train")
    assert [m["role"] for m in tulu[0]["messages"]] == ["user", "assistant"]
    assert len(hubdata.load("hh_rlhf", "train")) == 8 * 4  # the four preference subsets


def test_wikitext_hub_rows_give_the_local_text(tmp_path, monkeypatch):
    """The local test.txt made into hub rows as Salesforce/wikitext's builder made them (a blank
    line -> "", huggingface/datasets datasets/wikitext/wikitext.py) reads back as data.load's text."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    local = data.load("wikitext2_tokenized_valid_test", "test")["text"][:300]
    assert any(not t.strip() for t in local)
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": [t if t.strip() else "" for t in local]}), buf)
    cache = tmp_path / "hub"
    hubcache.add_dataset(cache, "Salesforce/wikitext", {"wikitext-2-v1/test-00000-of-00001.parquet": buf.getvalue()})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hubdata.load("wikitext", "test")["text"] == local


def test_c4_shards_file_by_file(hub):
    paths = hubdata.files("c4", "train", max_files=2)
    assert [p.name for p in paths] == ["c4-train.00000-of-01024.json.gz", "c4-train.00001-of-01024.json.gz"]
    texts = list(hubdata.iter_texts("c4", "train", max_files=2))
    assert len(texts) == 16 and texts[:8] != texts[8:]
    assert list(hubdata.iter_texts("c4", "validation", max_files=1)) == hubdata.load("c4", "validation", max_files=1)["text"]
    assert len(list(hubdata.iter_texts("c4", "validation"))) == 8 * 8  # the whole validation split
    with pytest.raises(hubdata.HubDataError, match=r"en/c4-train\.00002-of-01024\.json\.gz"):
        hubdata.files("c4", "train", max_files=3)  # the cache holds two shards


def test_missing_file_offline_is_a_clear_error(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    hubcache.add_dataset(cache, "openai/gsm8k", {"main/train-00000-of-00001.parquet": b"x"})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hubdata.HubDataError) as e:
        hubdata.load("gsm8k", "test")
    msg = str(e.value)
    for part in ("'openai/gsm8k'", "revision 'main'", "main/test-00000-of-00001.parquet", str(cache),
                 "HF_HUB_OFFLINE", "huggingface-cli download openai/gsm8k"):
        assert part in msg, part
    with pytest.raises(hubdata.HubDataError, match=r"'allenai/tulu-v2-sft-mixture'.*data/train-\*"):
        hubdata.load("tulu", "train")  # nothing of the repository in the cache
    assert isinstance(e.value, data.DataError)


def test_bad_arguments_are_clear_errors(hub):
    with pytest.raises(hubdata.HubDataError, match=r"no split 'dev'; allowed: train, test"):
        hubdata.load("gsm8k", "dev")
    with pytest.raises(hubdata.HubDataError, match=r"unknown hub data set 'nope'; registered: c4, "):
        hubdata.files("nope", "train")
    with pytest.raises(hubdata.HubDataError, match=r"source = 'web' is not allowed; allowed: local, hub"):
        hubdata.load("gsm8k", "train", source="web")
    with pytest.raises(hubdata.HubDataError, match=r"'tulu' has no local copy"):
        hubdata.load("tulu", "train", source="local")
    with pytest.raises(hubdata.HubDataError, match=r"max_files = 0"):
        hubdata.files("c4", "train", max_files=0)


def test_provenance_names_the_commit_and_files(hub):
    p = hubdata.provenance("gsm8k")
    assert p["hub_id"] == "openai/gsm8k" and p["revision"] == "main"
    ref = hub / "datasets--openai--gsm8k" / "refs" / "main"
    assert p["commit"] == ref.read_text().strip() and len(p["commit"]) == 40
    assert p["files"] == ["main/train-00000-of-00001.parquet", "main/test-00000-of-00001.parquet"]
    assert hubdata.provenance("c4", "train", max_files=2)["files"] == [
        "en/c4-train.00000-of-01024.json.gz", "en/c4-train.00001-of-01024.json.gz"]
    assert hubdata.provenance("tulu")["files"] == ["data/train-00000-of-00003-99ee8754042a69f6.parquet"]


def test_register_a_chapter_set_and_a_pinned_revision(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snap = hubcache.add_dataset(cache, "me/tasks", {"data/train.jsonl": b'{"q": "a", "y": 1}\n{"q": "b", "y": 0}\n'},
                                revision="v1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hs = hubdata.HubSet("my_task", "me/tasks", {"train": ("data/*.jsonl",)}, builder="json", revision="v1",
                        parse=lambda r: {"text": r["q"], "label": r["y"]}, schema={"text": "str", "label": "int"})
    monkeypatch.setitem(hubdata.REGISTRY, "my_task", hs)  # removed again after the test
    assert hubdata.register(hs) is hs  # the same definition twice is fine
    assert hubdata.load("my_task", "train").to_list() == [{"text": "a", "label": 1}, {"text": "b", "label": 0}]
    assert hubdata.provenance("my_task")["commit"] == snap.name
    assert hubdata.provenance("my_task", revision=snap.name)["commit"] == snap.name  # a commit as revision
    with pytest.raises(hubdata.HubDataError, match="already registered"):
        hubdata.register(hubdata.HubSet("my_task", "me/other", {"train": ("x",)}))
    with pytest.raises(hubdata.HubDataError, match=r"builder 'xml' is not allowed; allowed: json, parquet"):
        hubdata.HubSet("x", "me/x", {"train": ("x",)}, builder="xml")


def test_source_for_profiles():
    assert {p: hubdata.source_for(p) for p in profiles.PROFILES} == {
        "smoke": "local", "cpu": "local", "gpu": "local", "paper": "hub", "cpu-deep": "local"}
    with pytest.raises(profiles.ProfileError, match="unknown profile 'huge'"):
        hubdata.source_for("huge")


def test_every_set_documents_its_layout():
    for name, hs in hubdata.REGISTRY.items():
        assert hs.note, name
        for split, (tmpl, n) in hs.shards.items():
            assert (tmpl % 0).endswith((".json.gz", ".parquet")) and n >= 1
    assert hubdata.get("c4").shards["train"] == ("en/c4-train.%05d-of-01024.json.gz", 1024)
    assert hubdata.get("c4").shards["validation"] == ("en/c4-validation.%05d-of-00008.json.gz", 8)
    assert {hs.lm_eval for hs in hubdata.REGISTRY.values() if hs.lm_eval} >= {
        "arc_easy", "arc_challenge", "piqa", "hellaswag", "boolq", "winogrande", "openbookqa", "sciq"}


def test_command_line_lists_and_fetches(hub, capsys):
    assert hubdata.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "allenai/c4@main" in out and "en/c4-train.%05d-of-01024.json.gz x 1024" in out
    assert hubdata.main(["fetch", "gsm8k", "c4", "--max-files", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    import json
    got = [json.loads(l) for l in lines]
    assert got[0]["gsm8k"]["files"] == ["main/train-00000-of-00001.parquet", "main/test-00000-of-00001.parquet"]
    assert got[1]["c4"]["files"] == ["en/c4-train.00000-of-01024.json.gz", "en/c4-validation.00000-of-00008.json.gz"]
    with pytest.raises(hubdata.HubDataError, match="unknown hub data set 'nope'"):
        hubdata.main(["fetch", "gsm8k", "nope"])  # checked before any download


def test_hub_ids_agree_with_the_data_registry():
    for name, hs in hubdata.REGISTRY.items():
        if hs.local:
            s = data.spec(hs.local)
            assert s.local and s.hub == hs.hub_id, name
            assert s.hub_config in (None, hs.config), name
            assert hubdata.get(hs.local) is hs  # the local name finds the hub set
        if name in data.REGISTRY and not data.spec(name).local:  # hub-only entries (c4, tulu)
            assert data.spec(name).hub == hs.hub_id
            assert data.spec(name).schema == hs.schema and data.spec(name).builder == hs.builder, name


def test_sst2_class_label_parquet_gives_the_local_schema(tmp_path, monkeypatch):
    """The hub's own sst2 parquet carries datasets' metadata (label: ClassLabel); still int64."""
    import datasets
    f = datasets.Features({"idx": datasets.Value("int32"), "sentence": datasets.Value("string"),
                           "label": datasets.ClassLabel(names=["negative", "positive"])})
    p = tmp_path / "v.parquet"
    datasets.Dataset.from_dict({"idx": [0, 1], "sentence": ["a good film ", "bad "], "label": [1, 0]},
                               features=f).to_parquet(str(p))
    cache = tmp_path / "hub"
    hubcache.add_dataset(cache, "stanfordnlp/sst2", {"data/validation-00000-of-00001.parquet": p.read_bytes()})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    h = hubdata.load("sst2", "validation")
    assert h.to_list() == [{"text": "a good film", "label": 1}, {"text": "bad", "label": 0}]
    assert h.features == data.load("sst2_glue", "validation").features
