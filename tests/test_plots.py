"""The shared figure helpers: token labels, CI bands, verdict badges (log axes: test_divergence)."""
import io
import math

import pytest

from coft_utils.foundation import plots, verdicts


@pytest.mark.parametrize("t,label", [(2048, "2k"), (262144, "0.25M"), (8 * 2 ** 20, "8M"), (4e9, "4B"),
                                     (2 ** 30, "1B"), (3e12, "3T"), (1500, "1.5k"), (12, "12"),
                                     # the paper suite's 16B budget: 61,036 steps of 2^18 tokens
                                     (61036 * 2 ** 18, "16B"), (0.625 * 2 ** 30, "0.625B")])
def test_fmt_tokens(t, label):
    assert plots.fmt_tokens(t) == label


def test_band_and_badge_draw_and_skip_unknown_widths():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [1.0, 2.0, 3.0])
    plots.band(ax, [1, 2, 3], [1.0, 2.0, 3.0], [math.nan] * 3)  # one seed: no band
    assert len(ax.collections) == 0
    plots.band(ax, [1, 2, 3], [1.0, 2.0, 3.0], [0.1, 0.2, 0.3], color="C0")
    plots.band(ax, [1, 2, 3], [1.0, 2.0, 3.0], lo=[0.5, 1.5, 2.5], hi=[1.5, 2.5, 3.5])
    assert len(ax.collections) == 2
    with pytest.raises(ValueError, match="half_width"):
        plots.band(ax, [1], [1.0])
    for lab in verdicts.LABELS:
        plots.badge(ax, lab, loc="lower right")
    assert [t.get_text() for t in ax.texts] == list(verdicts.LABELS)
    assert ax.texts[0].get_bbox_patch().get_facecolor()[:3] == matplotlib.colors.to_rgb(verdicts.COLORS["observed"])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
