"""Which checkpoints a chapter runs on: the project's suite, a built-in hub series, or a file.

Every chapter on a checkpoint series (a :class:`~coft_utils.foundation.profiles.SeriesConfig`:
``series``, ``schedule``, ``checkpoints``) gets its series here, so no chapter imports another::

    from coft_utils.foundation import series
    s = series.for_config(cfg)                 # suite at cfg.profile (trained once, cached) / hub / file
    s = series.load("olmo-1b")                 # a built-in hub series (ids and revisions)
    s = series.load("my_checkpoints.yaml")     # a user's series: JSON or YAML, same fields

A user's file holds ``{"name": ..., "checkpoints": [{"label", "tokens", "hub_id" + "revision"
| "path"}, ...]}`` in token order (see :class:`coft_utils.foundation.models.CheckpointSeries`).
The suite comes from the pre-training chapter, found through the chapter registry
(``00_pretraining_suite``'s experiment module, ``get_suite``), imported only when asked for.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from . import models, registry

__all__ = ["for_config", "load", "suite", "FILE_SUFFIXES", "SUITE_CHAPTER"]

FILE_SUFFIXES = (".json", ".yaml", ".yml")
SUITE_CHAPTER = "00_pretraining_suite"


def load(spec) -> models.CheckpointSeries:
    """A series from a built-in name, a ``.json``/``.yaml`` file, a dict or a series itself."""
    if isinstance(spec, (str, os.PathLike)) and Path(spec).suffix in (".yaml", ".yml"):
        p = Path(spec)
        if not p.is_file():
            raise models.SeriesError(f"series file {p} does not exist")
        import yaml
        try:
            d = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise models.SeriesError(f"series file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(d, dict):
            raise models.SeriesError(f"series file {p} must hold a mapping with 'name' and 'checkpoints'")
        return models.CheckpointSeries.from_dict(json.loads(json.dumps(d)))
    return models.get_series(spec)


def suite(profile: str, schedule: str = "cosine", seed: int = 0, progress: bool = False) -> models.CheckpointSeries:
    """The project's pre-training suite at ``profile`` (trained on first use, then cached)."""
    return registry.experiment(SUITE_CHAPTER).get_suite(profile, schedule=schedule, seed=seed, progress=progress)


def for_config(cfg, progress: bool = False) -> models.CheckpointSeries:
    """The series a chapter config names (``series``: 'suite', a built-in name or a file; the
    suite at ``cfg.profile`` and ``cfg.schedule``), restricted to ``cfg.checkpoints`` when given."""
    s = suite(cfg.profile, cfg.schedule, 0, progress) if cfg.series == "suite" else load(cfg.series)
    return s.select(cfg.checkpoints) if cfg.checkpoints else s
