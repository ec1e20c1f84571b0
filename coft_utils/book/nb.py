"""Small helpers for the chapter notebooks: set-up, the parameters table, glued values.

A chapter notebook starts with::

    # %% tags=["parameters"]
    profile = "cpu"
    seed = 0
    overrides = {}

    # %%
    from coft_utils.book import nb
    cfg = nb.setup("05_linear_theory", profile, seed, overrides)   # validated, offline env set
    nb.show_params(cfg)                                             # the resolved-parameters table

and states its verdicts with ``nb.glue("name", value)``, referenced in the markdown as
``{glue:text}`name` `` (MyST-NB), so no number in the prose is typed in by hand.
"""
from __future__ import annotations

from ..foundation import parallel, profiles


quiet = parallel.quiet  # silence progress bars and chatty loggers (also used by worker processes)


def setup(chapter: str, profile: str = profiles.DEFAULT_PROFILE, seed: int = 0,
          overrides: dict | None = None):
    """Resolve and validate the chapter's config (fails before any work), quiet the libraries.
    An online profile run with the hub switched off prints one plain note on the page (which
    variables, which cache) instead of a Python warning."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", profiles.OfflineWarning)
        profiles.apply_offline_env(profile)
    for w in caught:
        print(f"note: {w.message}")
    quiet()
    try:
        import matplotlib
        matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "axes.grid": True,
                                    "grid.alpha": 0.3, "figure.figsize": (6.4, 4.0)})
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", profiles.OfflineWarning)  # said once above
        return profiles.resolve(chapter, profile, overrides or {}, seed=seed)


def params_frame(cfg):
    import pandas as pd
    rows = profiles.describe(cfg)
    df = pd.DataFrame(rows).set_index("parameter")
    df["value"] = df["value"].map(lambda v: ", ".join(map(str, v)) if isinstance(v, list) else str(v))
    return df


def show_params(cfg):
    """Display the resolved parameters of this run as a table."""
    from IPython.display import display
    display(params_frame(cfg))


def glue(name: str, value, display: bool = False):
    """Glue a value into the book (MyST-NB); a no-op outside a notebook kernel."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - myst-nb is a dependency
        return value
    if isinstance(value, str):  # glued text is inserted verbatim: no Markdown emphasis in it
        value = value.replace("**", "")
    _glue(name, value, display=display)
    return value


def glue_all(values) -> None:
    """:func:`glue` every ``{name: value}`` of a report function's glue dict, in its order."""
    for name, value in values.items():
        glue(name, value)


def show_depth(series, name: str = "depth_text"):
    """A page's "how deep does this series go" section: its tokens per parameter (with and without
    embeddings) beside the paper's models, as a table and a sentence glued as ``name``; returns
    the :class:`~coft_utils.foundation.depth.Depth` (None when unknown) for ``claims.record``."""
    from IPython.display import display

    from ..foundation import depth
    d = depth.of_series(series)
    display(depth.frame(d))
    glue(name, depth.text(d))
    return d
