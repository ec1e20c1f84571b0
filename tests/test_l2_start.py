"""Tests of the L2-to-start penalty in chapters 03/04's fine-tuning (``finetune.Config.l2_start``,
``finetune_train.l2_start_trainer``), at smoke scale: the unit keys of strength 0 are unchanged,
the penalized trainer at λ = 0 is the plain one bit for bit, the penalty keeps the weights near
the start, counts once per optimizer step under gradient accumulation, and a penalized unit goes
through the sweep into the store and resumes."""
import math

import pytest
from conftest import runs_in

LR = 1e-2
STEPS = 20


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A temporary runs/cache folder with the smoke suite trained once for the whole module."""
    with runs_in(tmp_path_factory.mktemp("l2")) as root:
        from coft_utils.chapters import pretrain
        from coft_utils.foundation import models, tasks
        series = pretrain.get_suite("smoke", progress=False)
        ck = series.checkpoints[-1]
        yield {"series": series, "series_json": str(series.save(root / "smoke_series.json")), "ckpt": ck,
               "tok": models.load_tokenizer(ck), "examples": tasks.splits("gsm8k", 64, 8, 8)["train"]}


def _train(env, overrides, force_l2=False, monkeypatch=None):
    """(fine-tuned model, log, trainer) of the last smoke checkpoint on gsm8k at LR, seed 0."""
    from coft_utils.chapters import finetune, finetune_train
    from coft_utils.foundation import models
    cfg = finetune.resolve("03_fixed_lr_finetuning", "smoke", {"steps": STEPS, "batch_size": 8, **overrides})
    if force_l2:
        monkeypatch.setattr(finetune_train, "_use_l2", lambda c: True)
    model = models.load_model(env["ckpt"])
    log = finetune_train.train(model, env["tok"], "gsm8k", env["examples"], cfg, lr=LR, seed=0)
    if force_l2:
        monkeypatch.undo()
    return model, log, log.pop("_trainer")


def _dist(a, b) -> float:
    return math.sqrt(sum(float((p.detach() - q.detach()).double().pow(2).sum())
                         for p, q in zip(a.parameters(), b.parameters())))


def test_strength_zero_keeps_unit_keys(env):
    from coft_utils.chapters import finetune, finetune_train
    from coft_utils.foundation import profiles, results
    cfg = finetune.resolve("03_fixed_lr_finetuning", "smoke")
    before = results.config_hash({k: getattr(cfg, k) for k in finetune._TRAIN_FIELDS}, 10)  # the key before l2_start
    us = finetune.units(env["series"], cfg)
    assert us and all(u["train_key"] == before for u in us)
    assert finetune.units(env["series"], finetune.resolve("03_fixed_lr_finetuning", "smoke", {"l2_start": 0.0})) == us
    k1 = finetune.train_key(finetune.resolve("03_fixed_lr_finetuning", "smoke", {"l2_start": 1.0}))
    k2 = finetune.train_key(finetune.resolve("03_fixed_lr_finetuning", "smoke", {"l2_start": 2.0}))
    assert len({before, k1, k2}) == 3
    with pytest.raises(profiles.ProfileError, match="l2_start"):
        finetune.resolve("03_fixed_lr_finetuning", "smoke", {"l2_start": -1.0})
    with pytest.raises(ValueError, match=r"l2_start.*>= 0, got -1"):
        finetune_train._check_l2(-1)


def test_l2_trainer_at_zero_is_plain_training_bitwise(env, monkeypatch):
    import torch
    m0, log0, tr0 = _train(env, {})
    m1, log1, tr1 = _train(env, {}, force_l2=True, monkeypatch=monkeypatch)
    assert type(tr1).__name__.startswith("L2Start") and not type(tr0).__name__.startswith("L2Start")
    assert tr1.l2_theta0 is not None and tr1.l2_penalty_last is not None
    sd0, sd1 = m0.state_dict(), m1.state_dict()
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    assert [h.get("loss") for h in tr0.state.log_history] == [h.get("loss") for h in tr1.state.log_history]
    for k in ("train_loss", "train_loss_first", "train_loss_last", "steps", "dist_to_start", "dist_to_start_rel"):
        assert log0[k] == log1[k], k
    assert "l2_start" not in log0 and "l2_start" not in log1  # recorded only when > 0
    assert log0["dist_to_start"] > 0 and 0 < log0["dist_to_start_rel"] < 10


def test_penalty_keeps_weights_near_the_start(env):
    from coft_utils.foundation import models
    start = models.load_model(env["ckpt"])
    n = sum(p.numel() for p in start.parameters())
    norm0 = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in start.parameters()))
    d = {}
    for lam in (0.0, 1.0, 100.0):
        m, log, _ = _train(env, {"l2_start": lam})
        d[lam] = log["dist_to_start"]
        assert d[lam] == pytest.approx(_dist(m, start), rel=1e-9)  # the recorded distance is ||θ − θ0||
        assert log["dist_to_start_rel"] == pytest.approx(d[lam] / norm0, rel=1e-9)
        if lam > 0:
            assert log["l2_start"] == lam and math.isfinite(log["train_penalty_last"])
    # measured (20 steps, lr 1e-2, 49k parameters): 9.89, 0.94, 0.128
    assert d[0.0] > d[1.0] > d[100.0], d
    # A strong pull holds each coordinate within about one Adam step of θ0; a step moves a
    # coordinate by ~lr (Adam's normalized update), so ||θ − θ0|| <~ lr·sqrt(n) = 2.2 here, and at the
    # end of the linear decay much less (measured 0.128 ≈ the last step's lr·sqrt(n)). Half that
    # bound and a tenth of the unregularized distance fail without the penalty (9.89) or with the
    # wrong sign (farther still).
    assert d[100.0] < 0.5 * LR * math.sqrt(n) and d[100.0] < 0.1 * d[0.0], (d, LR * math.sqrt(n))
    # the logged loss is the task loss: at a huge strength the penalty (measured 86) is far above it (6.3)
    _, log, _ = _train(env, {"l2_start": 1e4})
    assert log["train_loss_last"] < log["train_penalty_last"], log


def test_penalty_counts_once_per_step_under_accumulation(env):
    m_acc, log_acc, _ = _train(env, {"l2_start": 1.0, "per_device_batch_size": 4})
    m_one, log_one, _ = _train(env, {"l2_start": 1.0, "per_device_batch_size": 8})
    m_two, _, _ = _train(env, {"l2_start": 2.0, "per_device_batch_size": 8})
    assert log_acc["grad_accum"] == 2 and log_one.get("grad_accum", 1) == 1
    gap = _dist(m_acc, m_one)  # float summation order only: measured 6e-6
    # the same run with the penalty counted twice per step (= λ doubled) is far away: measured 0.61
    assert gap < 1e-3 * log_one["dist_to_start"] and _dist(m_two, m_one) > 100 * gap, (gap, _dist(m_two, m_one))
    assert log_acc["train_loss"] == pytest.approx(log_one["train_loss"], rel=1e-5)  # the task loss, per step
    assert log_acc["dist_to_start"] == pytest.approx(log_one["dist_to_start"], rel=1e-3)


def test_penalized_unit_through_sweep_and_resume(env, monkeypatch):
    from coft_utils.chapters import finetune
    from coft_utils.foundation import results
    ov = {"series": env["series_json"], "tasks": ["sst2"], "lrs": [LR], "checkpoints": ["64k"], "steps": 4,
          "experiment": "ft_l2", "seeds": 1}
    cfg = finetune.resolve("03_fixed_lr_finetuning", "smoke", {**ov, "l2_start": 10.0})
    series = finetune.load_series(cfg)
    df = finetune.sweep(series, cfg)
    assert len(df) == 1
    r = df.iloc[0]
    assert r.l2_start == 10.0 and r.dist_to_start > 0 and 0 < r.dist_to_start_rel < 1
    assert math.isfinite(r.train_penalty_last) and not r.diverged and math.isfinite(r.val_id_ppl)
    store = results.Store(cfg.experiment, cfg.profile)
    plain = finetune.resolve("03_fixed_lr_finetuning", "smoke", ov)
    assert not any(store.done(u) for u in finetune.units(series, plain))  # strength 0 is another unit

    def no_training(*a, **k):
        raise AssertionError("a finished unit was trained again")
    monkeypatch.setattr(finetune, "run_unit", no_training)
    again = finetune.sweep(series, cfg)
    assert len(again) == 1 and again.iloc[0].record_id == r.record_id
