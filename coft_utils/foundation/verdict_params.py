"""The significance level and Monte-Carlo sizes shared by every verdict test::

    from coft_utils.foundation import verdicts
    verdicts.ALPHA, verdicts.N_BOOT, verdicts.N_NULL     # 0.05, 2000, 20000

Defined here so that :mod:`coft_utils.foundation.verdicts` and
:mod:`coft_utils.foundation.verdict_shapes` both have them when their functions are defined
(default arguments), whichever of the two is imported first; use them through ``verdicts``.
"""
from __future__ import annotations

__all__ = ["ALPHA", "N_BOOT", "N_NULL"]

ALPHA = 0.05
N_BOOT = 2000   # bootstrap draws of minimum_shift
N_NULL = 20000  # null draws behind each simulated critical value
