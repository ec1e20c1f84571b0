"""How deep a checkpoint series goes: pre-training tokens per parameter, beside the paper's.

A verdict of "within noise" refutes nothing if it was measured short of the regime the paper is
about, so every chapter page and the claims page say how deep their series went, with and
without the embedding parameters (a small model's embeddings are a large share of it), next to
the paper's models::

    from coft_utils.foundation import depth
    d = depth.of_series(series)          # Depth(tokens=32M, params=65,536, ...) or None
    d.tpp, d.tpp_non_emb                 # 512.0, 1024.0
    depth.text(d)                        # one sentence for a page
    depth.frame(d)                       # this series and the references, one row each

The references (:data:`REFERENCES`) are the paper's (arXiv 2503.19206) headline OLMo-1B
checkpoints (2.3T and 3T tokens, §2), its §3 controlled OLMo-30M suite at 4B..128B tokens, and
the Pythia-70M report of a fine-tuning inflection near 33.6B tokens (quoted in this project's
issue 25). Parameter counts are computed from the shapes in :mod:`coft_utils.foundation.costs`
(the hub models' config.json; OLMo-30M: this project's ``olmo-30m`` shape, untied as under muP,
with a 50,304-entry vocabulary).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from . import costs
from .plots import fmt_tokens

__all__ = ["Depth", "REFERENCES", "of_shape", "of_series", "text", "frame", "to_record"]


@dataclass(frozen=True)
class Depth:
    """The deepest checkpoint of a series: its tokens and its model's parameters."""

    name: str
    tokens: float
    params: int
    params_non_emb: int
    tokens_min: float | None = None
    note: str = ""  # where the reference comes from

    @property
    def tpp(self) -> float:
        """Tokens per parameter, embeddings included (tied ones counted once)."""
        return self.tokens / self.params

    @property
    def tpp_non_emb(self) -> float:
        """Tokens per non-embedding parameter (Kaplan et al.'s N)."""
        return self.tokens / self.params_non_emb


def of_shape(name: str, tokens: float, shape: costs.ModelShape, tokens_min: float | None = None,
             note: str = "") -> Depth:
    return Depth(name, float(tokens), int(shape.n_params), int(shape.layers * shape.layer_params),
                 None if tokens_min is None else float(tokens_min), note)


def _refs() -> tuple[Depth, ...]:
    olmo1b = costs.HUB_MODELS["allenai/OLMo-1B-hf"]
    return (
        of_shape("OLMo-1B at 2.3T", 2.3e12, olmo1b, note="paper §2: the better checkpoint after instruction tuning"),
        of_shape("OLMo-1B at 3T", 3e12, olmo1b, note="paper §2: over 2 % worse after instruction tuning"),
        of_shape("OLMo-30M suite at 128B", 128e9, costs.olmo_shape("olmo-30m", 50304, tied=False), tokens_min=4e9,
                 note="paper §3: budgets 4B..128B (the shape is this project's olmo-30m)"),
        of_shape("Pythia-70M at 33.6B", 33.6e9, costs.HUB_MODELS["EleutherAI/pythia-70m"],
                 note="a reported fine-tuning inflection of Pythia-70M (issue 25)"),
    )


REFERENCES: tuple[Depth, ...] = _refs()


def of_series(series, name: str | None = None) -> Depth | None:
    """The depth of a :class:`~coft_utils.foundation.models.CheckpointSeries` (its checkpoints
    with known tokens; the shape of its last one), or None when tokens or shape are unknown."""
    cks = [c for c in series if getattr(c, "tokens", None)]
    if not cks:
        return None
    try:
        shape = costs.shape_of(max(cks, key=lambda c: c.tokens))
    except costs.CostError:
        return None
    return of_shape(name or series.name, max(c.tokens for c in cks), shape, min(c.tokens for c in cks))


def _n(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


def text(d: Depth | None) -> str:
    """One sentence: how deep this series goes, and where the paper's models are."""
    if d is None:
        return "The depth of this series (tokens per parameter) is unknown: its tokens or its model's shape are."
    ref = "; ".join(f"{r.name} {_n(r.tpp)} ({_n(r.tpp_non_emb)})" for r in REFERENCES)
    return (f"This series goes to {fmt_tokens(d.tokens)} tokens: {_n(d.tpp)} tokens per parameter "
            f"({_n(d.tpp_non_emb)} without embeddings; {d.params:,} parameters, {d.params_non_emb:,} without). "
            f"For comparison, tokens per parameter with (without) embeddings: {ref}.")


def frame(*ds: Depth | None):
    """One row per series (``ds``), then the references: tokens, parameters, tokens/parameter."""
    import pandas as pd
    rows = [{"series": d.name, "tokens": fmt_tokens(d.tokens)
             if d.tokens_min is None else f"{fmt_tokens(d.tokens_min)} .. {fmt_tokens(d.tokens)}",
             "parameters": f"{d.params:,}", "non-embedding": f"{d.params_non_emb:,}",
             "tokens/param": _n(d.tpp), "tokens/param (non-emb.)": _n(d.tpp_non_emb), "source": d.note or "this run"}
            for d in [*ds, *REFERENCES] if d is not None]
    return pd.DataFrame(rows).set_index("series")


def to_record(d: Depth | None) -> dict | None:
    """A claim record's ``depth`` field: tokens, parameters and both ratios (or None)."""
    if d is None:
        return None
    return {**asdict(d), "tpp": d.tpp, "tpp_non_emb": d.tpp_non_emb}
