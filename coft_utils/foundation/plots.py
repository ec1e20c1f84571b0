"""Figure helpers shared by the chapters: axes that survive diverged (non-finite) runs.

A chapter whose runs all diverged has nothing positive and finite to draw; matplotlib then
raises "Data cannot be log-scaled" when the figure is shown, and the page does not render.
Call these after plotting, instead of ``ax.set_yscale("log")``::

    from coft_utils.foundation import plots
    ax.plot(tokens, ppl, "o-")
    plots.log_y(ax)              # log scale if the axes hold a positive finite value, else a note
    plots.log_x(ax, base=2)
"""
from __future__ import annotations

import math

__all__ = ["log_y", "log_x", "token_axis", "has_positive", "NO_DATA"]

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
