"""Bad input from a user: a clear error naming the value, before any work, never a traceback
(issue 26, the classes "crash", "YAML denial of service" and "series file")."""
import time
from pathlib import Path

import pytest

from coft_utils.book import run
from coft_utils.foundation import safeyaml, series


def _bomb(levels: int, width: int = 9) -> str:
    lines = ["l0: &l0 [" + ", ".join(["x"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines)


# (argv after `python -m coft_utils`, a phrase the one-line error must contain)
CRASHES = [
    (["run", "05_linear_theory", "--profile", "smoke", "-y", "{overrides: [1, 2]}"], "'overrides'"),
    (["run", "05_linear_theory", "--profile", "smoke", "-p", "overrides", "5"], "'overrides'"),
    (["run", "05_linear_theory", "--profile", "smoke", "--timeout", "-1"], "--timeout = -1"),
    (["run", "05_linear_theory", "--profile", "smoke", "--timeout", "0"], "--timeout = 0"),
    (["run", "05_linear_theory", "--profile", "smoke", "--out", "README.md"], "is a file"),
    (["run", "05_linear_theory", "--profile", "smoke", "-y", "[1, 2]"], "YAML mapping"),
    (["run", "05_linear_theory", "--profile", "smoke", "-y", "{a: [1, 2}"], "line 1, column"),
    (["run", "05_linear_theory", "--profile", "smoke", "-y", _bomb(9)], "alias *l0 is not allowed"),
    (["plan", "05_linear_theory", "--profile", "smoke", "-y", _bomb(7)], "alias"),
    (["book", "--profile", "smoke", "-p", "gammas", "a: &a [1]\nb: *a"], "alias"),
]


@pytest.mark.parametrize("argv, phrase", CRASHES, ids=[" ".join(a[-2:])[:30] for a, _ in CRASHES])
def test_bad_input_is_one_clear_line_before_any_work(argv, phrase, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("COFT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(run.REPO_ROOT)
    ran = []
    monkeypatch.setattr(run, "build", lambda *a, **k: ran.append("build"))
    t0 = time.time()
    assert run.main(argv) == 1
    err = capsys.readouterr().err
    assert time.time() - t0 < 10 and phrase in err and "Traceback" not in err and not ran
    assert len(err) < 2000, "error messages are capped in length"
    assert not (tmp_path / "runs").exists(), "nothing was computed"


def test_yaml_reads_numbers_and_dates_as_a_researcher_means_them():
    assert safeyaml.load("{tokens: 100e9, lr: 3E-4, n: 1e3, label: 2024-01-01, x: 1.5}") == {
        "tokens": 1e11, "lr": 3e-4, "n": 1000.0, "label": "2024-01-01", "x": 1.5}
    with pytest.raises(safeyaml.YAMLInputError, match="at most"):
        safeyaml.load("a: " + "x" * (safeyaml.MAX_CHARS + 1))


def test_a_series_file_with_an_alias_bomb_a_date_label_and_exponent_tokens(tmp_path):
    (tmp_path / "w").mkdir()
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"name: mine\ncheckpoints:\n  - {{label: 2024-01-01, tokens: 100e9, path: {tmp_path / 'w'}}}\n")
    s = series.load(str(ok))
    assert s.checkpoints[0].label == "2024-01-01" and s.checkpoints[0].tokens == 1e11
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("name: b\nmeta:\n" + "\n".join("  " + ln for ln in _bomb(9).splitlines())
                    + f"\ncheckpoints:\n  - {{label: a, tokens: 1, path: {tmp_path / 'w'}}}\n")
    t0 = time.time()
    with pytest.raises(series.SeriesError, match=r"series file .*bomb.yaml.*alias"):
        series.load(str(bomb))
    assert time.time() - t0 < 5


@pytest.mark.parametrize("gammas", [[0], [-0.0], [0.1, 0.0]])
def test_a_zero_noise_size_is_refused_up_front(gammas):
    from coft_utils.foundation import profiles
    with pytest.raises(profiles.ProfileError, match=r"'gammas' = -?0\.0 is out of range; allowed: > 0\.0"):
        profiles.resolve("02_gaussian_sensitivity", "cpu", {"gammas": gammas})


def test_class_metrics_of_a_diverged_model_give_inf_not_a_crash(monkeypatch):
    """lr 1000 on sst2: verbalizer log-probabilities of -1e6 used to overflow math.exp."""
    import math

    from coft_utils.chapters import finetune_eval
    monkeypatch.setattr(finetune_eval, "encode", lambda tok, p, c, n: ([1, 2], 1))
    monkeypatch.setattr(finetune_eval, "_pad", lambda tok: 0)
    monkeypatch.setattr(finetune_eval, "target_logprobs",
                        lambda model, seqs, bs, pad: [(-1e6 * (i % 2), 1) for i in range(len(seqs))])
    ex = [{"prompt": "p", "choices": ["a", "b"], "label": 1}] * 3
    m = finetune_eval.class_metrics(None, None, ex)
    assert m["class_nll"] > 700 and m["class_ppl"] == math.inf and m["accuracy"] == 0.0


@pytest.mark.parametrize("damage", [lambda t: t[:100], lambda t: "", lambda t: "[1, 2]"], ids=["cut", "empty", "list"])
def test_a_damaged_record_is_named_moved_aside_and_computed_again(damage, tmp_path, capsys):
    from coft_utils.foundation import results
    store = results.Store("x", "smoke", root=tmp_path / "x")
    calls = []

    def fn(u):
        calls.append(u["i"])
        return {"v": u["i"] * 2}
    units = [{"i": i} for i in range(3)]
    store.run(units, fn, progress=False)
    p = store.path(units[1])
    p.write_text(damage(p.read_text()))
    assert len(store.records()) == 2 and not store.done(units[1])
    err = capsys.readouterr().err
    assert str(p) in err and "computed again" in err
    assert len(list((tmp_path / "x").glob("*.damaged-*"))) == 1
    store.run(units, fn, progress=False)
    assert calls == [0, 1, 2, 1] and store.get(units[1])["metrics"]["v"] == 2


def test_a_page_on_a_user_series_is_stale_when_its_weights_or_file_change(tmp_path):
    """The runner's up-to-date stamp covers a series file's bytes and its checkpoints' weights; a
    missing checkpoint folder is a named error before any work."""
    import json
    import types

    from coft_utils.foundation import profiles
    for lab in ("a", "b"):
        (tmp_path / lab).mkdir()
        (tmp_path / lab / "model.safetensors").write_bytes(b"weights " + lab.encode())
        (tmp_path / lab / "config.json").write_text("{}")
    f = tmp_path / "mine.json"

    def write(labels):
        f.write_text(json.dumps({"name": "mine", "checkpoints": [
            {"label": lab, "tokens": i + 1, "path": str(tmp_path / lab)} for i, lab in enumerate(labels)]}))
    cfg = types.SimpleNamespace(series=str(f))
    write(["a", "b"])
    first = run.inputs_fingerprint(cfg)
    assert first and run.inputs_fingerprint(cfg) == first
    (tmp_path / "b" / "model.safetensors").write_bytes(b"weights B, retrained")
    second = run.inputs_fingerprint(cfg)
    assert second != first
    write(["a"])
    assert run.inputs_fingerprint(cfg) not in (first, second)
    assert run.inputs_fingerprint(types.SimpleNamespace(series="suite")) == ""
    write(["a", "gone"])
    with pytest.raises(profiles.ProfileError, match="gone"):
        run.inputs_fingerprint(cfg)


def test_naming_another_tokenizer_changes_every_units_key(tmp_path):
    from coft_utils.chapters import finetune, perturb
    from coft_utils.foundation import models, weights
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model.safetensors").write_bytes(b"w")
    ck = (models.Checkpoint("a", 1.0, path=str(tmp_path / "w")),)
    plain = models.CheckpointSeries("s", ck)
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text('{"v": 1}')
    own = models.CheckpointSeries("s", ck, tokenizer=str(tok))
    assert weights.tokenizer_key(plain) == {}
    k1 = weights.tokenizer_key(own)
    (tok / "tokenizer.json").write_text('{"v": 2}')
    assert weights.tokenizer_key(own) != k1
    ft = finetune.resolve("03_fixed_lr_finetuning", "smoke")
    assert "tokenizer" not in finetune.units(plain, ft)[0] and "tokenizer" in finetune.units(own, ft)[0]
    pc = perturb.Config(profile="smoke")
    assert "tokenizer" in perturb._units(own, pc, ck[0])[0] and "tokenizer" not in perturb._units(plain, pc, ck[0])[0]


def _ckpt(folder, vocab=600, model_type="gpt2", layers=2, gpt2_names=None):
    import json
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" + str(vocab).encode())
    conf = ({"model_type": model_type, "vocab_size": vocab, "n_embd": 32, "n_layer": gpt2_names, "n_head": 2}
            if gpt2_names else {"model_type": model_type, "vocab_size": vocab, "hidden_size": 32,
                                "num_hidden_layers": layers, "num_attention_heads": 2})
    (folder / "config.json").write_text(json.dumps(conf))


@pytest.mark.parametrize("b, phrase", [
    ({"vocab": 2000}, "vocab_size: 600 vs 2000"),
    ({"model_type": "llama"}, "model_type: 'gpt2' vs 'llama'"),
    ({"layers": 3}, "num_hidden_layers: 2 vs 3"),
    ({"gpt2_names": 3}, "num_hidden_layers: 2 vs 3"),
    (None, "has no folder"),
    ("empty", "has no weights"),
], ids=["vocab", "architecture", "depth", "gpt2 depth", "missing", "no weights"])
def test_a_series_file_of_mixed_or_missing_checkpoints_is_refused_before_work(b, phrase, tmp_path):
    import json

    from coft_utils.foundation import profiles
    _ckpt(tmp_path / "a")
    if isinstance(b, dict):
        _ckpt(tmp_path / "b", **b)
    elif b == "empty":
        (tmp_path / "b").mkdir()
    f = tmp_path / "mine.json"
    f.write_text(json.dumps({"name": "mine", "checkpoints": [{"label": "a", "tokens": 1, "path": "a"},
                                                             {"label": "b", "tokens": 2, "path": "b"}]}))
    with pytest.raises(profiles.ProfileError, match=phrase):
        profiles.resolve("02_gaussian_sensitivity", "cpu", {"series": str(f)})


def test_relative_paths_in_a_series_file_are_the_files_own(tmp_path, monkeypatch):
    import json
    _ckpt(tmp_path / "runs" / "a")
    f = tmp_path / "runs" / "mine.json"
    f.write_text(json.dumps({"name": "mine", "checkpoints": [{"label": "a", "tokens": 1, "path": "a"}]}))
    monkeypatch.chdir(tmp_path)  # not the file's folder
    assert series.load("runs/mine.json").checkpoints[0].path == str((tmp_path / "runs" / "a").resolve())
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "checkpoints": [}')
    with pytest.raises(series.SeriesError, match=r"bad.json is not valid JSON \(line 2, column"):
        series.load(str(bad))


def test_a_moved_runs_folder_reads_its_own_weights(tmp_path, monkeypatch):
    """series.json holds checkpoint paths relative to itself: a copied or moved runs folder loads
    the copy's weights, never the original's."""
    import shutil

    from coft_utils.chapters import pretrain
    monkeypatch.setenv("COFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COFT_RUNS_DIR", str(tmp_path / "runs"))
    over = {"n_budgets": 2, "val_blocks": 0}
    first = pretrain.get_suite("smoke", "cosine", overrides=over, progress=False)
    assert all(c.path.startswith(str(tmp_path / "runs")) for c in first)
    shutil.move(tmp_path / "runs", tmp_path / "moved")
    monkeypatch.setenv("COFT_RUNS_DIR", str(tmp_path / "moved"))
    again = pretrain.get_suite("smoke", "cosine", overrides=over, progress=False)
    assert [c.label for c in again] == [c.label for c in first]
    assert all(c.path.startswith(str((tmp_path / "moved").resolve())) and Path(c.path).is_dir() for c in again)


def test_run_chapter_help_lists_the_chapters_parameters(capsys):
    with pytest.raises(SystemExit) as e:
        run.main(["run", "02_gaussian_sensitivity", "--profile", "smoke", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "parameters of 02_gaussian_sensitivity at profile smoke" in out
    assert "gammas = [0.2, 0.8]" in out and "> 0.0" in out
