"""Divergence is a result: detect a non-finite training loss or weights, never score the model.

The Hugging Face ``Trainer`` hides non-finite losses (``logging_nan_inf_filter``) and goes on
training a NaN model, which is then evaluated as if it were a model. Chapters 01, 03 and 04
wrap their trainer class with :func:`watch`, which notes the first optimizer step whose loss is
not finite and stops there; :func:`check` gives the record's ``diverged`` fields::

    from coft_utils.foundation import divergence
    trainer = divergence.watch(Trainer)(model=model, args=args, ...)   # or SFTTrainer
    trainer.train()
    info = divergence.check(trainer, model)   # {"diverged", "diverged_step", "diverged_reason"}
    if info["diverged"]:
        ...  # record it with NaN scores; figures show it as ×, verdicts say "inconclusive"

Pass ``logging_nan_inf_filter=False`` in the training arguments so that the logged losses show
the NaN too.
"""
from __future__ import annotations

import math

__all__ = ["watch", "check", "FIELDS", "nan_scores"]

FIELDS = ("diverged", "diverged_step", "diverged_reason")


def watch(trainer_cls):
    """A subclass of a ``Trainer`` class that notes the first optimizer step whose training loss
    is not finite (``trainer.diverged_step``, 1-based; None while every loss is finite) and stops
    training there."""
    import torch

    class Watched(trainer_cls):
        diverged_step = None

        def training_step(self, *args, **kwargs):
            loss = super().training_step(*args, **kwargs)
            if self.diverged_step is None and not bool(torch.isfinite(loss.detach()).all()):
                self.diverged_step = int(self.state.global_step) + 1
                self.control.should_training_stop = True
            return loss

    Watched.__name__ = Watched.__qualname__ = f"DivergenceWatched{trainer_cls.__name__}"
    return Watched


def check(trainer, model) -> dict:
    """``{"diverged", "diverged_step", "diverged_reason"}`` after training: a non-finite training
    loss (at its step) or non-finite weights after the last step."""
    import torch
    step = getattr(trainer, "diverged_step", None)
    if step is not None:
        return {"diverged": True, "diverged_step": int(step),
                "diverged_reason": f"non-finite training loss at step {step}"}
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        step = int(trainer.state.global_step)
        return {"diverged": True, "diverged_step": step, "diverged_reason": f"non-finite weights after step {step}"}
    return {"diverged": False, "diverged_step": None, "diverged_reason": ""}


def nan_scores(metrics: dict, prefixes: tuple[str, ...]) -> dict:
    """A copy of ``metrics`` with every numeric field whose name starts with one of ``prefixes``
    set to NaN (a diverged model's metrics are not scores)."""
    out = dict(metrics)
    for k, v in metrics.items():
        if k.startswith(prefixes) and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = math.nan
    return out
