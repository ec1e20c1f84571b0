"""Figure helpers shared by the chapters: axes that survive diverged (non-finite) runs.

A chapter whose runs all diverged has nothing positive and finite to draw; matplotlib then
raises "Data cannot be log-scaled" when the figure is shown, and the page does not render.
Call these after plotting, instead of ``ax.set_yscale("log")``::

    from coft_utils.foundation import plots
    ax.plot(tokens, ppl, "o-")
    plots.log_y(ax)              # log scale if the axes hold a positive finite value, else a note
    plots.log_x(ax, base=2)
    plots.token_axis(ax, tokens, labels)       # log tokens on x, one labelled tick per checkpoint
    plots.band(ax, tokens, mean, half_width)   # the 95 % CI band over seeds (nothing where unknown)
    plots.badge(ax, verdict.label)             # the verdict's coloured label in the corner
    plots.fmt_tokens(262144)                   # '0.25M' (the suite's checkpoint labels)
"""
from __future__ import annotations

import math

__all__ = ["log_y", "log_x", "token_axis", "band", "badge", "fmt_tokens", "has_positive", "NO_DATA"]

NO_DATA = "no finite values to draw\n(diverged runs are not scored)"


def has_positive(ax, which: str = "y") -> bool:
    """Whether the axes' data (in data coordinates along ``which``) hold a positive finite value."""
    if which not in ("x", "y"):
        raise ValueError(f"which must be 'x' or 'y', got {which!r}")
    lim = ax.dataLim
    return math.isfinite(lim.minposy if which == "y" else lim.minposx)


_TOP = 1e250  # a log locator over ~300 decades steps past 1e308 and overflows the tick formatter


def _log(ax, which: str, **kw) -> bool:
    if has_positive(ax, which):
        (ax.set_yscale if which == "y" else ax.set_xscale)("log", **kw)
        lim = ax.dataLim
        lo, hi = (lim.minposy, lim.y1) if which == "y" else (lim.minposx, lim.x1)
        if not math.isfinite(hi) or hi > _TOP:  # an exploded (but finite) value: keep the axis drawable
            (ax.set_ylim if which == "y" else ax.set_xlim)(lo / 2, _TOP)
        return True
    if not getattr(ax, "_coft_no_data", False):
        ax.text(0.5, 0.5, NO_DATA, ha="center", va="center", transform=ax.transAxes, color="0.35")
        ax._coft_no_data = True
    return False


def log_y(ax, **kw) -> bool:
    """``ax.set_yscale("log", **kw)`` when there is positive finite data; otherwise the axis stays
    linear and the axes say that nothing finite was measured. Returns whether log was set."""
    return _log(ax, "y", **kw)


def log_x(ax, **kw) -> bool:
    """As :func:`log_y`, for the x axis."""
    return _log(ax, "x", **kw)


def token_axis(ax, tokens, labels=None, rotation: float = 0, fontsize=None) -> None:
    """Log-scaled pre-training tokens on x, one tick per checkpoint labelled with its name (no
    minor labels). Works on axes with nothing finite drawn (every run diverged): the limits then
    come from the checkpoints themselves."""
    import matplotlib.ticker as mt
    tokens = [float(t) for t in tokens]
    labels = [str(l) for l in (labels if labels is not None else tokens)]
    pos = [t for t in tokens if math.isfinite(t) and t > 0]
    if not has_positive(ax, "x") and pos:
        ax.set_xlim(min(pos) / 1.3, max(pos) * 1.3)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(mt.FixedLocator(tokens))
    ax.xaxis.set_major_formatter(mt.FixedFormatter(labels))
    ax.xaxis.set_minor_locator(mt.NullLocator())
    if rotation or fontsize:
        ax.tick_params(axis="x", labelrotation=rotation, **({"labelsize": fontsize} if fontsize else {}))


def fmt_tokens(t: float) -> str:
    """Compact label of a token count: 4k, 0.25M, 8M (binary units when exact and short), 4B,
    16B (16,000,221,184 tokens: decimal, not '15259M'); also the label of each checkpoint of the
    project's suite."""
    t = float(t)
    for div, suf in ((2 ** 40, "T"), (2 ** 30, "B"), (2 ** 20, "M"), (2 ** 10, "k")):
        v = t / div
        if 0.125 <= v < 10_000 and (v * 8).is_integer() and len(f"{v:g}") <= 5:
            return f"{v:g}{suf}"
    for div, suf in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if t >= div:
            return f"{t / div:.3g}{suf}"
    return f"{int(t)}"


def band(ax, x, y, half_width=None, color=None, lo=None, hi=None, alpha: float = 0.18) -> None:
    """A shaded band around ``y``: ``y ± half_width`` (a 95 % CI over seeds) or ``[lo, hi]``
    (min–max over seeds). Nothing is drawn where the width is unknown (one seed: NaN)."""
    import numpy as np
    y = np.asarray(y, float)
    if half_width is not None:
        c = np.asarray(half_width, float)
        if not np.isfinite(c).any():
            return
        lo, hi = y - c, y + c
    if lo is None or hi is None:
        raise ValueError("band needs half_width or both lo and hi")
    ax.fill_between(np.asarray(x, float), np.asarray(lo, float), np.asarray(hi, float), color=color,
                    alpha=alpha, lw=0)


def badge(ax, label: str, loc: str = "upper left") -> None:
    """The verdict's label in a coloured box in a corner of the axes (colours of
    :data:`coft_utils.foundation.verdicts.COLORS`), so a figure says what was decided."""
    from . import verdicts
    x, ha = (0.02, "left") if "left" in loc else (0.98, "right")
    y, va = (0.97, "top") if "upper" in loc else (0.03, "bottom")
    ax.text(x, y, label, transform=ax.transAxes, ha=ha, va=va, fontsize=8.5, color="white", fontweight="bold",
            bbox=dict(boxstyle="round,pad=0.3", fc=verdicts.COLORS.get(label, "#6e7781"), ec="none"))
