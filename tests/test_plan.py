"""``python -m coft_utils plan``: the costed plan of every chapter at gpu and paper, and the cost model."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coft_utils.book import plan, run
from coft_utils.foundation import costs

REPO = Path(__file__).resolve().parents[1]
GPU_CHAPTERS = ("00_pretraining_suite", "01_instruction_tuning", "02_gaussian_sensitivity",
                "03_fixed_lr_finetuning", "04_lr_sweep")


@pytest.mark.parametrize("profile", ["paper", "gpu"])
def test_plan_all_offline_without_torch_or_hub(tmp_path, profile):
    """In a fresh process with the hub unreachable and an empty hub cache: every chapter is
    planned, nothing heavy is imported, nothing lands in the hub cache."""
    hub = tmp_path / "hub"
    hub.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_CACHE": str(hub),
           "COFT_RUNS_DIR": str(tmp_path / "runs"), "COFT_CACHE_DIR": str(tmp_path / "cache")}
    js = tmp_path / "plan.json"
    code = ("import sys\nfrom coft_utils.book import run\n"
            f"rc = run.main(['plan', 'all', '--profile', {profile!r}, '--json', {str(js)!r}, '--max-units', '3'])\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'trl', 'lm_eval') if m in sys.modules]\n"
            "print('HEAVY', heavy)\nsys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "HEAVY []" in r.stdout
    assert list(hub.iterdir()) == [] and not (tmp_path / "runs").exists()
    for ch in (*GPU_CHAPTERS, "05_linear_theory", "06_mitigations"):
        assert f"{ch} @ {profile}:" in r.stdout
    assert r.stdout.count("total (") == 7
    d = json.loads(js.read_text())
    assert [p["chapter"] for p in d["plans"]] == [*GPU_CHAPTERS, "05_linear_theory", "06_mitigations"]
    p06 = d["plans"][-1]  # chapter 06: chapters 02-04's units per schedule and strength, and wsd_short's branches
    names = [u["name"] for u in p06["units"]]
    assert sum(n.startswith("pre-training: wsd_short") for n in names) == 6
    assert any(n.startswith("L2 λ=") for n in names) and any(n.startswith("sensitivity constant") for n in names)
    assert all(u["shared"] == (n.split(":")[0].endswith("cosine") or n.startswith("LR grid"))
               for u, n in zip(p06["units"], names))
    for p in d["plans"]:
        t = p["totals"]
        assert t["units"] == len(p["units"]) >= 1 and math.isfinite(t["flops"]) and t["flops"] > 0
        if p["chapter"] == "05_linear_theory":  # one CPU unit: no tokens, no GPU
            assert t["gpus"] == 0 and t["A100_hours"] == 0
            continue
        assert t["tokens"] > 0 and math.isfinite(t["tokens"])
        for g in ("A100", "H100"):
            assert 0 < t[f"{g}_hours"] < 1e6
        assert t["A100_hours"] / t["H100_hours"] == pytest.approx(989 / 312)
        for u in p["units"]:
            assert u["tokens"] > 0 and u["flops"] > 0 and 0 < u["mem_gb"] < 1e4 and u["gpus"] in (1, 2, 4, 8)
        assert t["flops"] == pytest.approx(sum(u["flops"] for u in p["units"]))


def test_paper_units_follow_the_configs():
    p = plan.chapter_plan("02_gaussian_sensitivity", "paper", {"series": "olmo-1b", "checkpoints": ["42B", "168B"]})
    assert [u.name for u in p.units] == ["sweep 42B", "sweep 168B"]
    cfg = p.config
    n_eval = len(cfg["sources"]) * (1 + len(cfg["gammas"]) * cfg["n_seeds"]) + 1 + len(cfg["compare_gammas"]) * cfg["n_seeds"]
    assert p.units[0].tokens == n_eval * cfg["n_blocks"] * cfg["seq_len"]
    s = costs.HUB_MODELS["allenai/OLMo-1B-hf"]
    assert p.units[0].flops == pytest.approx(costs.eval_flops(s, p.units[0].tokens, cfg["seq_len"]))
    f3 = plan.chapter_plan("03_fixed_lr_finetuning", "paper", {"series": "olmo-1b"})
    c3 = f3.config
    runs = [u for u in f3.units if u.kind == "train"]
    assert len(runs) == 11 * len(c3["tasks"]) * len(c3["lrs"]) * c3["seeds"]
    assert len(f3.units) - len(runs) == 11 * len(c3["tasks"])  # one base evaluation per (checkpoint, task)
    assert all(u.shared for u in runs)  # chapter 04's grid holds chapter 03's LRs: computed once
    # a 7B series needs FSDP over several GPUs to fine-tune
    f7 = plan.chapter_plan("03_fixed_lr_finetuning", "paper", {"series": "olmo-2-7b-stage1"})
    assert max(u.gpus for u in f7.units) > 1


def test_cost_model_known_cases():
    s = costs.HUB_MODELS["allenai/OLMo-1B-hf"]
    assert s.n_params == 1_176_764_416  # 16 x (4 d^2 + 3 d ffn) + 50304 d, tied
    # 6 N D + the attention term (Kaplan et al. 2020): N = layers' matrices + the head
    n, D, L = s.n_matmul, 1e9, 2048
    assert costs.train_flops(s, D, L) == pytest.approx(6 * n * D + 6 * s.layers * L * s.d_model * D)
    assert costs.eval_flops(s, D, L) == pytest.approx(costs.train_flops(s, D, L) / 3)
    assert costs.train_flops(s, D, L, recompute=True) == pytest.approx(costs.train_flops(s, D, L) * 4 / 3)
    assert costs.gpu_hours(312e12 * 0.4 * 3600, "A100") == pytest.approx(1.0)
    assert costs.gpu_hours(989e12 * 0.4 * 3600, "H100") == pytest.approx(1.0)
    # Pythia: the model cards' parameter counts
    for name, card in (("70m", 70_426_624), ("160m", 162_322_944), ("410m", 405_334_016), ("1b", 1_011_781_632)):
        assert costs.HUB_MODELS[f"EleutherAI/pythia-{name}"].n_params == pytest.approx(card, rel=0.005)
    # a 7B model trained with AdamW in bf16 under 8-way FSDP: 16 bytes/param / 8 + one gathered layer
    o7 = costs.HUB_MODELS["allenai/OLMo-2-1124-7B"]
    assert o7.n_params == pytest.approx(7.30e9, rel=0.01)
    m = costs.memory(o7, True, "bf16", 1024, 1, shards=8, grad_checkpointing=True)
    assert m.states_gb == pytest.approx((16 * o7.n_params / 8 + 2 * o7.layer_params) / 1e9)
    assert 14 < m.states_gb < 16
    full = costs.memory(o7, True, "bf16", 1024, 1, shards=1)
    assert full.total_gb > 116  # does not fit one 80 GB GPU
    g, mem, fits = costs.fit_gpus(lambda g: costs.memory(o7, True, "bf16", 1024, 1, shards=g, grad_checkpointing=True))
    assert fits and g in (2, 4) and mem.total_gb <= 80
    # activations: Korthikanti et al.'s 34 s b d bytes per layer in 16 bit; checkpointing keeps 2 s b d
    a = costs.memory(s, True, "bf16", 1000, 2).activations_gb
    assert a == pytest.approx(s.layers * 34 * 1000 * 2 * s.d_model / 1e9)
    with pytest.raises(costs.CostError, match="unknown precision 'int3'"):
        costs.memory(s, True, "int3", 8, 1)
    with pytest.raises(costs.CostError, match="unknown GPU 'V100'"):
        costs.gpu_hours(1.0, "V100")


def test_bad_input_is_a_clear_error_before_any_work(capsys, tmp_path):
    assert run.main(["plan", "07_nope", "--profile", "paper"]) == 1
    assert "unknown chapter '07_nope'; allowed: 00_pretraining_suite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run.main(["plan", "all", "--profile", "tpu"])
    assert run.main(["plan", "02_gaussian_sensitivity", "--profile", "paper", "-p", "gamas", "1"]) == 1
    assert "unknown parameter(s) 'gamas'" in capsys.readouterr().err
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"name": "x", "checkpoints": [{"label": "a", "tokens": 1, "hub_id": "me/unknown-model"}]}))
    assert run.main(["plan", "02_gaussian_sensitivity", "--profile", "paper", "-p", "series", str(f)]) == 1
    assert "no model shape for checkpoint 'a'" in capsys.readouterr().err


def test_book_page(tmp_path):
    out = plan.write_page(tmp_path)
    text = out.read_text()
    assert out == tmp_path / "book" / "_generated" / "plan.md"
    assert not [l for l in text.splitlines() if l.startswith(("# ", "## "))]  # included under a "##" section
    for ch in (*GPU_CHAPTERS, "05_linear_theory"):
        assert f"| {ch} | paper |" in text and f"| {ch} | gpu |" in text
        assert f"### {ch} at `paper`" in text
    assert "Not planned" not in text
    assert text.count("<details>") == text.count("</details>") == 14
