"""YAML from a user (``-y``, ``-p``, series files), read safely and as a researcher means it.

::

    from coft_utils.foundation import safeyaml
    safeyaml.load("{lrs: [1e-3, 3e-2], tokens: 100e9}", "-y")   # {'lrs': [0.001, 0.03], 'tokens': 1e11}
    safeyaml.load("a: &x [1]\\nb: *x", "-y")                    # YAMLInputError: aliases are refused

Compared with ``yaml.safe_load``:

* **no aliases** (``*name``): an alias of an alias of ... expands exponentially (a few hundred
  bytes became gigabytes: a "billion laughs"), and no parameter or series file needs one, so
  every alias is refused before anything is built; texts over :data:`MAX_CHARS` are refused too;
* **numbers as written**: ``1e3``, ``100e9``, ``3E-4`` are floats (YAML 1.1 wants a dot and
  reads them as strings);
* **no dates**: ``2024-01-01`` stays the string it looks like (a label, not a ``datetime.date``
  that no record can store);
* errors name the source (``what``: "-y", "-p lrs", a file) with the line and column, and quote at
  most :data:`MAX_QUOTE` characters of the input.
"""
from __future__ import annotations

import re

import yaml

__all__ = ["YAMLInputError", "load", "MAX_CHARS", "MAX_QUOTE"]

MAX_CHARS = 1_000_000  # a series file of thousands of checkpoints is ~100 kB
MAX_QUOTE = 200


class YAMLInputError(ValueError):
    """User YAML that is malformed, too large, or uses an alias."""


def quote(text: str, n: int = MAX_QUOTE) -> str:
    """``repr`` of ``text``, cut to ``n`` characters (error messages stay short)."""
    r = repr(text)
    return r if len(r) <= n else r[:n] + f"... ({len(text):,} characters)"


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases and timestamps, with exponent-only floats."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            ev = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{ev.anchor} is not allowed (aliases can expand without bound; write the "
                            "value out)", ev.start_mark)
        return super().compose_node(parent, index)


# no timestamps: a date-looking scalar stays a string
_Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
# floats written without a dot: 1e3, -2.5E-4 is already a float; 100e9
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def load(text: str, what: str = "YAML"):
    """Parse ``text`` (from ``what``) or raise :class:`YAMLInputError` naming it."""
    if not isinstance(text, str):
        raise YAMLInputError(f"{what}: expected text, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise YAMLInputError(f"{what}: {len(text):,} characters of YAML; allowed: at most {MAX_CHARS:,}")
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise YAMLInputError(f"{what} is not valid YAML{where}: {problem}; the text: {quote(text)}") from None
