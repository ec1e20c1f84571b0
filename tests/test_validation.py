"""Bad input is refused before any work, for every chapter, through the runner's own path.

Each case is what a user types after ``python -m coft_utils run <chapter> --profile smoke``: a
``-y`` YAML mapping (or ``-p KEY VALUE`` pairs), parsed by ``run._parse_params``, split by
``run.split_params`` and resolved by ``profiles.resolve`` (what ``nb.setup`` does in the
notebook's first cell). Every case must raise :class:`ProfileError` whose message names the
parameter (and the bad value where it has one), and nothing may be trained, loaded or written:
the runs folder stays empty and no model library is imported.
"""
from __future__ import annotations

import json
import re
import sys
import time

import pytest

from coft_utils.foundation import profiles
from coft_utils.book import run
from coft_utils.foundation.profiles import ProfileError

SMOKE = "smoke"


def resolve_like_runner(chapter: str, yaml_text: str | None = None, pairs: list | None = None,
                        profile: str = SMOKE):
    params = run._parse_params(pairs, yaml_text)
    nb_params = run.split_params({**params, "profile": profile})
    return profiles.resolve(chapter, nb_params["profile"], nb_params["overrides"], seed=nb_params.get("seed"))


@pytest.fixture(autouse=True)
def _no_work(tmp_path, monkeypatch):
    """Runs and caches of this module go to a temporary folder that must stay empty."""
    monkeypatch.setenv("COFT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("COFT_CACHE_DIR", str(tmp_path / "cache"))
    t0 = time.perf_counter()
    yield
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*")), "work was done"
    assert time.perf_counter() - t0 < 5, "validation must not do any work"


# (chapter, -y YAML, parameter the message must name, bad value it must show or None)
CASES = {
    "00_pretraining_suite": [
        ("{seq_len: .inf}", "seq_len", "inf"),                        # inf
        ("{lr: .nan}", "lr", "nan"),                                  # nan
        ("{warmup_steps: -1}", "warmup_steps", "-1"),                 # negative
        ("{batch_size: 0}", "batch_size", "0"),                       # zero where positive needed
        ("{vocab_size: big}", "vocab_size", "'big'"),                 # wrong type
        ("{batch_size: true}", "batch_size", "True"),                 # bool for number
        ("{lr_scan_lrs: fast}", "lr_scan_lrs", "'fast'"),             # string for list
        ("{lr_scan_lrs: [0.01, 0.01]}", "lr_scan_lrs", "0.01"),       # duplicates
        ("{schedule: linear}", "schedule", "'linear'"),               # out of choices
        ("{model: olmo-huge}", "model", "'olmo-huge'"),               # out of choices
        ("{val_blocks: 1000000}", "val_blocks", "1000000"),           # too large: the held-out text
        ("{n_budgets: 31}", "n_budgets", "31"),                       # too large
        ("{tokenizer_chars: 1e10}", "tokenizer_chars", "10000000000"),  # too large
        ("{workers: 1000}", "workers", "1000"),                       # too large
        ("{threads: 100000}", "threads", "100000"),                   # too large
        ("{gammas: [0.1]}", "gammas", None),                          # unknown parameter
        ("{experiment: ../../etc}", "experiment", None),              # no such parameter here
        ("{corpus: c4}", "corpus", "'c4'"),                           # hub data at an offline profile
        ("{seed: -1}", "seed", "-1"),
        ("{min_budget: 1}", "min_budget", "1"),                       # below one optimizer step
    ],
    "01_instruction_tuning": [
        ("{lrs: [.inf]}", "lrs", "inf"),
        ("{warmup_ratio: .nan}", "warmup_ratio", "nan"),
        ("{seeds: -1}", "seeds", "-1"),
        ("{batch_size: 0}", "batch_size", "0"),
        ("{sft_steps: many}", "sft_steps", "'many'"),
        ("{bench_local: 1}", "bench_local", "1"),                     # number for bool
        ("{eval_batch_size: true}", "eval_batch_size", "True"),
        ("{lrs: fast}", "lrs", "'fast'"),
        ("{sft_data: []}", "sft_data", None),                         # empty list
        ("{lrs: [0.001, 0.001]}", "lrs", "0.001"),
        ("{benchmarks: [mmlu]}", "benchmarks", "'mmlu'"),
        ("{lr_schedule: exp}", "lr_schedule", "'exp'"),
        ("{train_per_source: 1000000000}", "train_per_source", "1000000000"),
        ("{n_checkpoints: 50}", "n_checkpoints", "50"),               # more than the series has
        ("{max_seq_len: 4096}", "max_seq_len", "4096"),
        ("{series: olmo-1b}", "series", "'olmo-1b'"),                 # hub series offline
        ("{series: ../../../etc/passwd.json}", "series", "passwd"),   # path that is no series
        ("{checkpoints: [5]}", "checkpoints", "5"),                   # element type (empty default)
        ("{checkpoints: [nope]}", "checkpoints", "nope"),             # a label the suite lacks
        ("{alpacaeval_judge: 5}", "alpacaeval_judge", "5"),           # None default, str type
        ("{sft_data: [tulu]}", "sft_data", "tulu"),                   # hub data offline
        ("{experiment: x}", "experiment", None),                      # unknown parameter
    ],
    "02_gaussian_sensitivity": [
        ("{gammas: [.inf]}", "gammas", "inf"),
        ("{init_std: .nan}", "init_std", "nan"),
        ("{n_seeds: -2}", "n_seeds", "-2"),
        ("{n_blocks: 0}", "n_blocks", "0"),
        ("{seq_len: long}", "seq_len", "'long'"),
        ("{n_seeds: true}", "n_seeds", "True"),
        ("{gammas: abc}", "gammas", "'abc'"),
        ("{sources: []}", "sources", None),
        ("{gammas: [0.2, 0.2]}", "gammas", "0.2"),
        ("{scale: huge}", "scale", "'huge'"),
        ("{n_blocks: 100000}", "n_blocks", "100000"),                 # more than the held-out text
        ("{n_seeds: 101}", "n_seeds", "101"),
        ("{series: olmo-1b}", "series", "'olmo-1b'"),
        ("{series: pythia-70m, checkpoints: [2B]}", "series", "'pythia-70m'"),
        ("{checkpoints: 5}", "checkpoints", "5"),
        ("{checkpoints: [[a]]}", "checkpoints", r"\['a'\]"),
        ("{checkpoints: [9T]}", "checkpoints", "9T"),
        ("{compare_gammas: [abc]}", "compare_gammas", "'abc'"),      # element type (empty default)
        ("{noise: 0.1}", "noise", None),
        ("{series: nope}", "series", "'nope'"),
        ("{sources: [c4]}", "sources", "c4"),
    ],
    "03_fixed_lr_finetuning": [
        ("{lrs: [.inf]}", "lrs", "inf"),
        ("{grad_clip: .nan}", "grad_clip", "nan"),
        ("{steps: -5}", "steps", "-5"),
        ("{lrs: [0]}", "lrs", "0"),
        ("{n_train: lots}", "n_train", "'lots'"),
        ("{keep_weights: yes please}", "keep_weights", "'yes please'"),
        ("{batch_size: true}", "batch_size", "True"),
        ("{tasks: []}", "tasks", None),
        ("{tasks: [sst2, sst2]}", "tasks", "sst2"),
        ("{select_metric: f1}", "select_metric", "'f1'"),
        ("{tasks: [nope]}", "tasks", "'nope'"),
        ("{n_train: 100000}", "n_train", "100000"),                   # more than every train split
        ("{n_test: 1e9}", "n_test", "1000000000"),
        ("{ood_blocks: 100000}", "ood_blocks", "100000"),
        ("{experiment: ../../etc}", "experiment", r"'\.\./\.\./etc'"),  # path traversal
        ("{experiment: claims}", "experiment", "'claims'"),
        ("{series: olmo-1b}", "series", "'olmo-1b'"),
        ("{checkpoints: [1, 2]}", "checkpoints", "1"),
        ("{checkpoints: [nope]}", "checkpoints", "nope"),
        ("{ood_source: c4}", "ood_source", "'c4'"),
        ("{beta2: 1.0}", "beta2", "1.0"),
        ("{gamma: 0.1}", "gamma", None),
    ],
    "04_lr_sweep": [
        ("{lrs: [-.inf]}", "lrs", "-inf"),
        ("{warmup_ratio: .nan}", "warmup_ratio", "nan"),
        ("{seeds: 0}", "seeds", "0"),
        ("{eval_batch_size: 0}", "eval_batch_size", "0"),
        ("{max_len: wide}", "max_len", "'wide'"),
        ("{seeds: true}", "seeds", "True"),
        ("{lrs: abc}", "lrs", "'abc'"),
        ("{lrs: []}", "lrs", None),
        ("{lrs: [0.01, 0.01]}", "lrs", "0.01"),
        ("{lr_schedule: exp}", "lr_schedule", "'exp'"),
        ("{n_val: 5000}", "n_val", "5000"),                           # more than every validation split
        ("{workers: 65}", "workers", "65"),
        ("{experiment: a/b}", "experiment", "'a/b'"),
        ("{experiment: ..}", "experiment", r"'\.\.'"),
        ("{series: pythia-70m}", "series", "'pythia-70m'"),
        ("{checkpoints: [[a]]}", "checkpoints", r"\['a'\]"),
        ("{checkpoints: [2k, 2k]}", "checkpoints", "2k"),
        ("{early_frac: 0}", "early_frac", "0"),
        ("{series: nope.json}", "series", "'nope.json'"),
        ("{n_checkpoints: 3}", "n_checkpoints", None),               # unknown in this chapter
    ],
    "05_linear_theory": [
        ("{gammas: [.inf]}", "gammas", "inf"),
        ("{s_max: .nan}", "s_max", "nan"),
        ("{d_in: -1}", "d_in", "-1"),
        ("{lr: 0}", "lr", "0"),
        ("{n_draws: many}", "n_draws", "'many'"),
        ("{n_draws: true}", "n_draws", "True"),
        ("{gammas: abc}", "gammas", "'abc'"),
        ("{gammas: []}", "gammas", None),
        ("{reg_lambdas: [1, 1]}", "reg_lambdas", "1"),
        ("{spectrum: linear}", "spectrum", "'linear'"),
        ("{n_draws: 1e9}", "n_draws", "1000000000"),                  # the 477 GiB run: memory cap
        ("{n_draws: 1000000000}", "n_draws", "GiB"),
        ("{theory_grid: 100000000}", "theory_grid", "100000000"),
        ("{d_hidden: 4096}", "d_hidden", "4096"),
        ("{n_checkpoints: 4}", "n_checkpoints", "4"),
        ("{n_draws: .inf}", "n_draws", "inf"),
        ("{theta: 2.0}", "theta", "2.0"),
        ("{series: olmo-1b}", "series", None),                        # no series in this chapter
        ("{experiment: ../x}", "experiment", None),
        ("{seed: 1e12}", "seed", "1000000000000"),
    ],
    "06_mitigations": [
        ("{lr: .inf}", "lr", "inf"),
        ("{lr: .nan}", "lr", "nan"),
        ("{lr: 0}", "lr", "0"),
        ("{gammas: [-1]}", "gammas", "-1"),
        ("{gammas: abc}", "gammas", "'abc'"),
        ("{gammas: []}", "gammas", None),
        ("{l2_strengths: [0.1, 1.0]}", "l2_strengths", "0.1"),        # no unregularized reference
        ("{l2_strengths: [0, -1]}", "l2_strengths", "-1"),
        ("{l2_strengths: [0, .inf]}", "l2_strengths", "inf"),
        ("{schedules: [wsd, linear]}", "schedules", "'linear'"),
        ("{schedules: [wsd]}", "schedules", "wsd"),                   # nothing to compare
        ("{schedules: [wsd, wsd]}", "schedules", "wsd"),
        ("{task: nope}", "task", "'nope'"),
        ("{l2_schedule: linear}", "l2_schedule", "'linear'"),
        ("{theory: maybe}", "theory", "'maybe'"),
        ("{series: olmo-1b}", "series", None),                        # the suite's schedules only
    ],
    "98_verdicts": [
        ("{draws: .inf}", "draws", "inf"),
        ("{draws: .nan}", "draws", "nan"),
        ("{draws: -1}", "draws", "-1"),
        ("{draws: 0}", "draws", "0"),
        ("{draws: many}", "draws", "'many'"),
        ("{draws: true}", "draws", "True"),
        ("{draws: [100]}", "draws", r"\[100\]"),
        ("{draws: 1000000}", "draws", "1000000"),
        ("{draws: 2.5}", "draws", "2.5"),
        ("{seed: -1}", "seed", "-1"),
        ("{seed: .nan}", "seed", "nan"),
        ("{gammas: [0.1]}", "gammas", None),
        ("{experiment: ../x}", "experiment", None),
    ],
    "99_claims": [
        ("{seed: .inf}", "seed", "inf"),
        ("{seed: .nan}", "seed", "nan"),
        ("{seed: -1}", "seed", "-1"),
        ("{seed: abc}", "seed", "'abc'"),
        ("{seed: true}", "seed", "True"),
        ("{seed: [1, 2]}", "seed", r"\[1, 2\]"),
        ("{seed: 1.5}", "seed", "1.5"),
        ("{seed: 1e12}", "seed", "1000000000000"),
        ("{seed: 100000001}", "seed", "100000001"),
        ("{gammas: [0.1]}", "gammas", None),
        ("{experiment: ../../etc}", "experiment", None),
        ("{series: olmo-1b}", "series", None),
    ],
}

PARAMS = [pytest.param(ch, y, name, val, id=f"{ch}:{y}") for ch, cases in CASES.items()
          for y, name, val in cases]


def test_every_chapter_is_covered():
    assert set(CASES) == set(profiles.CHAPTERS) == set(run.chapters())
    assert all(len(c) >= 10 for c in CASES.values())


@pytest.mark.parametrize("chapter,yaml_text,name,value", PARAMS)
def test_bad_input_fails_at_resolve(chapter, yaml_text, name, value):
    with pytest.raises(ProfileError) as e:
        resolve_like_runner(chapter, yaml_text)
    msg = str(e.value)
    assert "\n" not in msg
    assert re.search(rf"'{re.escape(name)}(\[\d+\])?'", msg), f"message does not name {name!r}: {msg}"
    if value is not None:
        assert re.search(value, msg), f"message does not show the bad value {value!r}: {msg}"


# the same through -p KEY VALUE (each value parsed as YAML on its own)
@pytest.mark.parametrize("chapter,pairs,name", [
    ("05_linear_theory", [["n_draws", "1e9"]], "n_draws"),
    ("02_gaussian_sensitivity", [["series", "olmo-1b"]], "series"),
    ("03_fixed_lr_finetuning", [["checkpoints", "5"]], "checkpoints"),
    ("03_fixed_lr_finetuning", [["checkpoints", "[1, 2]"]], "checkpoints"),
    ("03_fixed_lr_finetuning", [["checkpoints", "[[a]]"]], "checkpoints"),
    ("03_fixed_lr_finetuning", [["n_train", "1e9"]], "n_train"),
    ("04_lr_sweep", [["lrs", "[0.01, }"]], "lrs"),                   # malformed YAML
    ("01_instruction_tuning", [["series", "olmo-1b"]], "series"),
])
def test_bad_cli_pairs(chapter, pairs, name):
    with pytest.raises(ProfileError, match=re.escape(name)):
        resolve_like_runner(chapter, pairs=pairs)


def test_no_model_library_is_needed():
    """Validation imports neither torch nor transformers (it never loads a model)."""
    import subprocess
    code = ("import sys; from coft_utils.foundation import profiles\n"
            "for ch in profiles.CHAPTERS:\n"
            "    for p in profiles.PROFILES: profiles.resolve(ch, p)\n"
            "try:\n    profiles.resolve('02_gaussian_sensitivity', 'smoke', {'series': 'olmo-1b'})\n"
            "except profiles.ProfileError: pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # chapter modules may import torch at the top; what matters is that no model or data is loaded
    assert "transformers" not in out.stdout and "datasets" not in out.stdout, out.stdout


# --------------------------------------------------------------------------- series rules
HUB_MSG = r"parameter 'series' = .* is a hub series .* profile '(smoke|cpu|cpu-deep)' runs offline"  # gpu may use the hub


@pytest.mark.parametrize("chapter", ["01_instruction_tuning", "02_gaussian_sensitivity",
                                     "03_fixed_lr_finetuning", "04_lr_sweep"])
@pytest.mark.parametrize("profile", [p for p, v in profiles.PROFILES.items() if v.offline])
def test_hub_series_refused_at_every_offline_profile(chapter, profile):
    with pytest.raises(ProfileError, match=HUB_MSG) as e:
        resolve_like_runner(chapter, "{series: olmo-1b}", profile=profile)
    assert "allenai/OLMo-1B-hf" in str(e.value) and re.search(r"--profile \S*paper", str(e.value))


def test_series_chapters_are_series_configs():
    """Every chapter with a 'series' parameter gets the shared rules (00 trains the suite itself)."""
    import dataclasses
    with_series = {ch for ch in profiles.CHAPTERS
                   if "series" in {f.name for f in dataclasses.fields(profiles._chapter_presets(ch)[SMOKE])}}
    assert with_series == {"01_instruction_tuning", "02_gaussian_sensitivity", "03_fixed_lr_finetuning",
                           "04_lr_sweep"}
    for ch in with_series:
        assert isinstance(profiles._chapter_presets(ch)[SMOKE], profiles.SeriesConfig)


def test_series_json_hub_or_local(tmp_path):
    hub = tmp_path / "hub.json"
    hub.write_text(json.dumps({"name": "h", "checkpoints": [
        {"label": "a", "tokens": 1, "hub_id": "me/model", "revision": "r1"}]}))
    with pytest.raises(ProfileError, match=HUB_MSG) as e:
        resolve_like_runner("02_gaussian_sensitivity", f"{{series: {hub}}}")
    assert "hub: me/model" in str(e.value)
    assert resolve_like_runner("02_gaussian_sensitivity", f"{{series: {hub}}}", profile="paper").series == str(hub)
    for lab in "ab":  # local checkpoints must exist and hold weights (checked before any work)
        (tmp_path / lab).mkdir()
        (tmp_path / lab / "model.safetensors").write_bytes(b"w")
    local = tmp_path / "local.json"
    local.write_text(json.dumps({"name": "l", "checkpoints": [
        {"label": "a", "tokens": 1, "path": str(tmp_path / "a")},
        {"label": "b", "tokens": 2, "path": str(tmp_path / "b")}]}))
    cfg = resolve_like_runner("03_fixed_lr_finetuning", f"{{series: {local}, checkpoints: [b]}}")
    assert cfg.checkpoints == ("b",)
    with pytest.raises(ProfileError, match=r"'checkpoints' names \['c'\] that series .* allowed: labels of \['a', 'b'\]"):
        resolve_like_runner("03_fixed_lr_finetuning", f"{{series: {local}, checkpoints: [c]}}")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match=r"parameter 'series' = .*bad.json' is not a valid series file"):
        resolve_like_runner("02_gaussian_sensitivity", f"{{series: {bad}}}")


def test_good_values_still_resolve():
    cfg = resolve_like_runner("03_fixed_lr_finetuning", "{checkpoints: [2k, 64k], n_train: 7099}")
    assert cfg.checkpoints == ("2k", "64k") and cfg.n_train == 7099
    assert resolve_like_runner("05_linear_theory", "{n_draws: 1e3}").n_draws == 1000
    assert resolve_like_runner("02_gaussian_sensitivity", "{compare_gammas: [1, 2]}").compare_gammas == (1.0, 2.0)
    assert resolve_like_runner("01_instruction_tuning", "{alpacaeval_judge: null}").alpacaeval_judge is None
    assert resolve_like_runner("02_gaussian_sensitivity", "{series: pythia-70m}", profile="paper").series == "pythia-70m"
    assert resolve_like_runner("99_claims", "{seed: 3}").seed == 3


@pytest.mark.parametrize("argv", [
    ["02_gaussian_sensitivity", "-p", "series", "olmo-1b"],
    ["05_linear_theory", "-p", "n_draws", "1e9"],
    ["03_fixed_lr_finetuning", "-y", "{checkpoints: [[a]]}"],
])
def test_runner_refuses_before_a_kernel_starts(argv, tmp_path, capsys):
    out = tmp_path / "nb"
    assert run.main(["run", *argv, "--profile", SMOKE, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: parameter '") and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()  # no notebook was started
