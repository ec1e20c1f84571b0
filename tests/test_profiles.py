"""Profiles: presets, overrides and validation (on a chapter config defined here)."""
from dataclasses import dataclass

import pytest

from coft_utils.foundation import profiles
from coft_utils.foundation.profiles import ProfileError, param


@dataclass(frozen=True)
class Config(profiles.ChapterConfig):
    gammas: tuple = param((0.01, 0.02), "noise scales", min=0.0)
    steps: int = param(10, "steps", min=1)
    lr: float = param(1e-3, "learning rate", min=0.0, min_exclusive=True)
    scale: str = param("init", "noise scale", choices=("init", "empirical"))
    plot: bool = param(True, "draw figures")

    def check(self):
        if self.steps > 1000 and self.profile == "smoke":
            raise ProfileError(f"steps={self.steps} is too many for the smoke profile (<= 1000)")


PRESETS = {p: Config(profile=p, steps={"smoke": 2}.get(p, 10)) for p in profiles.PROFILES}


@pytest.fixture(autouse=True)
def _register(monkeypatch):
    monkeypatch.setitem(profiles.CHAPTERS, "test_chapter", __name__)


def test_preset_and_overrides():
    cfg = profiles.resolve("test_chapter", "smoke")
    assert cfg.steps == 2 and cfg.profile == "smoke"
    cfg = profiles.resolve("test_chapter", "cpu", {"gammas": [0.1, 1], "lr": "3e-4"}, seed=7)
    assert cfg.gammas == (0.1, 1.0) and isinstance(cfg.gammas[1], float)
    assert cfg.lr == 3e-4 and cfg.seed == 7
    assert cfg.to_dict()["gammas"] == [0.1, 1.0]
    rows = {r["parameter"]: r for r in profiles.describe(cfg)}
    assert rows["lr"]["allowed"] == "> 0.0" and rows["scale"]["allowed"] == "one of init, empirical"


@pytest.mark.parametrize("profile,overrides,match", [
    ("huge", {}, r"unknown profile 'huge'; allowed: smoke, cpu, gpu, paper"),
    ("cpu", {"gamma": [1]}, r"unknown parameter\(s\) 'gamma'.*allowed: seed .*gammas \(>= 0.0\)"),
    ("cpu", {"gammas": [-0.1]}, r"'gammas' = -0.1 is out of range; allowed: >= 0.0"),
    ("cpu", {"gammas": ["abc"]}, r"'gammas\[0\]' must be a number, got 'abc'"),
    ("cpu", {"steps": 2.5}, r"'steps' must be an integer, got 2.5"),
    ("cpu", {"steps": 0}, r"'steps' = 0 is out of range; allowed: >= 1"),
    ("cpu", {"lr": 0}, r"'lr' = 0.0 is out of range; allowed: > 0.0"),
    ("cpu", {"scale": "huge"}, r"'scale' = 'huge' is not allowed; allowed: 'init', 'empirical'"),
    ("cpu", {"plot": "yes"}, r"'plot' must be true or false"),
    ("cpu", {"profile": "gpu"}, r"unknown parameter\(s\) 'profile'"),
    ("smoke", {"steps": 5000}, r"too many for the smoke profile"),
])
def test_bad_input_is_a_clear_error(profile, overrides, match):
    with pytest.raises(ProfileError, match=match):
        profiles.resolve("test_chapter", profile, overrides)


def test_unknown_chapter_and_offline_env(monkeypatch):
    with pytest.raises(ProfileError, match="unknown chapter 'nope'; allowed: 00_pretraining_suite"):
        profiles.resolve("nope", "cpu")
    import os
    import warnings
    for k in profiles.OFFLINE_VARS:
        monkeypatch.delenv(k, raising=False)
    for online in ("gpu", "paper"):  # both may download; nothing is set, nothing is warned
        assert not profiles.get_profile(online).offline
        with warnings.catch_warnings():
            warnings.simplefilter("error", profiles.OfflineWarning)
            profiles.resolve("test_chapter", online)
        assert not any(k in os.environ for k in profiles.OFFLINE_VARS)
    profiles.resolve("test_chapter", "cpu")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    # a shell that set HF_HUB_OFFLINE: an online profile says so, naming the variable and the unset
    with pytest.warns(profiles.OfflineWarning, match=r"profile 'paper' .*HF_HUB_OFFLINE=1.*unset HF_HUB_OFFLINE"):
        profiles.resolve("test_chapter", "paper")


def test_sequence_default_must_be_immutable():
    with pytest.raises(TypeError):
        param([1, 2], "a list default")


@pytest.mark.parametrize("chapter,overrides,match", [
    ("03_fixed_lr_finetuning", {"lrs": [float("inf")]}, r"'lrs\[0\]' must be a finite number, got inf"),
    ("03_fixed_lr_finetuning", {"grad_clip": "-inf"}, r"'grad_clip' must be a finite number, got -inf"),
    ("05_linear_theory", {"gammas": [1e400]}, r"must be a finite number"),  # what YAML makes of .inf
    ("01_instruction_tuning", {"lrs": []}, r"'lrs' must list at least one value"),
    ("02_gaussian_sensitivity", {"sources": []}, r"'sources' must list at least one value"),
    ("05_linear_theory", {"reg_lambdas": []}, r"'reg_lambdas' must list at least one value"),
    ("05_linear_theory", {"gammas": [0.2, 0.2]}, r"'gammas' has repeated values \['0.2'\]"),
    ("02_gaussian_sensitivity", {"sources": ["wikitext", "wikitext"]}, r"repeated values \['wikitext'\]"),
    ("01_instruction_tuning", {"sft_data": ["gsm8k", "gsm8k"]}, r"'sft_data' has repeated values"),
    ("03_fixed_lr_finetuning", {"beta2": 1.0}, r"'beta2' = 1.0 is out of range; allowed: < 1.0"),
    ("03_fixed_lr_finetuning", {"experiment": ".."}, r"'experiment' = '..' is not allowed"),
    ("03_fixed_lr_finetuning", {"experiment": "claims"}, r"'experiment' = 'claims' is not allowed"),
])
def test_values_that_used_to_get_through(chapter, overrides, match):
    with pytest.raises(ProfileError, match=match):
        profiles.resolve(chapter, "smoke", overrides)


def test_empty_allowed_where_it_means_none():
    assert profiles.resolve("00_pretraining_suite", "smoke", {"lr_scan_lrs": []}).lr_scan_lrs == ()
    assert profiles.resolve("02_gaussian_sensitivity", "smoke", {"compare_gammas": []}).compare_gammas == ()


def test_malformed_yaml_is_a_clear_error(capsys):
    from coft_utils.book import run
    assert run.main(["run", "05_linear_theory", "--profile", "smoke", "-y", "{gammas: [0.2, }"]) == 1
    err = capsys.readouterr().err
    assert "is not valid YAML" in err and "Traceback" not in err
