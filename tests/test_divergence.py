"""Divergence is a result: detected at its step, never scored, drawn as such, verdicts inconclusive.

The chapter pages with diverged runs are executed in tests/test_book.py
(``test_chapter_renders_with_diverged_runs``); here the pieces, fast."""
import io
import math
from types import SimpleNamespace

import numpy as np
import pytest

from coft_utils.foundation import divergence, plots, verdicts
def _draws(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # raises where a page would not render
    return buf.tell() > 0


class _FakeTrainer:
    """The two attributes of ``transformers.Trainer`` that :func:`divergence.watch` uses."""

    def __init__(self, losses):
        self.losses = list(losses)
        self.state = SimpleNamespace(global_step=0)
        self.control = SimpleNamespace(should_training_stop=False)

    def training_step(self, *args, **kwargs):
        import torch
        return torch.tensor(self.losses[self.state.global_step])

    def train(self):
        while self.state.global_step < len(self.losses) and not self.control.should_training_stop:
            self.training_step()
            self.state.global_step += 1


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_watch_notes_the_first_non_finite_step_and_stops(bad):
    import torch
    t = divergence.watch(_FakeTrainer)([2.0, 1.5, bad, 1.0, bad])
    t.train()
    assert t.diverged_step == 3 and t.state.global_step == 3  # stopped at the step it diverged
    info = divergence.check(t, torch.nn.Linear(2, 2))
    assert info == {"diverged": True, "diverged_step": 3, "diverged_reason": "non-finite training loss at step 3"}


def test_check_sees_non_finite_weights_and_passes_a_clean_run():
    import torch
    t = divergence.watch(_FakeTrainer)([2.0, 1.0])
    t.train()
    m = torch.nn.Linear(2, 2)
    assert divergence.check(t, m)["diverged"] is False
    with torch.no_grad():
        m.weight[0, 0] = float("nan")
    assert divergence.check(t, m) == {"diverged": True, "diverged_step": 2,
                                      "diverged_reason": "non-finite weights after step 2"}


def test_nan_scores_blanks_only_the_named_numbers():
    m = divergence.nan_scores({"val_ppl": 3.0, "test_acc": 0.5, "tokens": 10.0, "val_name": "x", "val_ok": True},
                              ("val_", "test_"))
    assert math.isnan(m["val_ppl"]) and math.isnan(m["test_acc"])
    assert m["tokens"] == 10.0 and m["val_name"] == "x" and m["val_ok"] is True


def test_verdicts_diverged_makes_any_label_inconclusive_with_the_reason():
    tok = 2.0 ** np.arange(6)
    Y = np.vstack([np.arange(6.0) + r for r in (0.0, 0.1, -0.1)])
    v = verdicts.rises(tok, Y)
    assert v.label == "observed"
    assert verdicts.diverged(v, "") is v
    d = verdicts.diverged(v, "2 of 6 runs diverged (checkpoints 4k)")
    assert d.label == "inconclusive" and d.reason.startswith("diverged: 2 of 6")
    assert d.n_replicates == 3 and not math.isfinite(d.statistic)  # no statistic from diverged runs
    assert verdicts.combine({"a": d, "b": d}).label == "inconclusive"


def test_log_axes_survive_nothing_finite_and_exploded_values():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3)
    tok = [2e3, 4e3, 8e3]
    axes[0].plot(tok, [math.nan] * 3, "o-")  # every run diverged
    assert plots.log_y(axes[0]) is False and axes[0].get_yscale() == "linear"
    plots.token_axis(axes[0], tok, ["2k", "4k", "8k"])
    axes[1].plot(tok, [5.0, 2.5e287, math.inf], "o-")  # an exploded but finite value, then inf
    assert plots.log_y(axes[1]) is True and axes[1].get_ylim()[1] <= 1e250
    plots.token_axis(axes[1], tok, ["2k", "4k", "8k"])
    axes[2].plot(tok, [3.0, 2.0, 1.0])
    assert plots.log_y(axes[2]) is True
    plots.token_axis(axes[2], tok)
    fig.tight_layout()
    assert _draws(fig)
    assert any(plots.NO_DATA in t.get_text() for t in axes[0].texts)
    plt.close(fig)
    # what the unguarded calls do (why the helpers exist)
    fig, ax = plt.subplots()
    ax.plot(tok, [math.nan] * 3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    with pytest.raises(ValueError, match="log-scaled"):
        _draws(fig)
    plt.close(fig)


def test_theory_verdicts_and_figures_take_non_finite_losses():
    """Chapter 05 refuses unstable step sizes up front, so it cannot diverge; if a loss were
    non-finite anyway, its verdict is inconclusive and its figures still draw."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from coft_utils.foundation import profiles
    from coft_utils.chapters import theory, theory_report
    cfg = profiles.resolve("05_linear_theory", "smoke")
    res = theory.run_all(cfg)
    assert theory_report.claim_verdicts(res)["linear_ushape"][0].label != "inconclusive"
    g = sorted(cfg.gammas)[0]
    res.perturb_draws[g] = np.full_like(res.perturb_draws[g], np.inf)
    res.perturb_mc[g] = np.full_like(np.asarray(res.perturb_mc[g], float), np.inf)
    v, measured = theory_report.claim_verdicts(res)["linear_ushape"]
    assert v.label == "inconclusive", (v.label, v.reason)
    for fig_fn in (theory_report.fig_sensitivity, theory_report.fig_ushape):
        fig = fig_fn(res)
        assert _draws(fig)
        plt.close(fig)
    with pytest.raises(profiles.ProfileError, match="lr"):
        profiles.resolve("05_linear_theory", "smoke", {"ft_lrs": [1e3]})
    with pytest.raises(profiles.ProfileError, match="gammas"):
        profiles.resolve("05_linear_theory", "smoke", {"gammas": [1e200]})
