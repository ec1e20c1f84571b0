"""Wall time of each chapter at the profile it was last executed with (from the executed
notebooks' metadata in book/_generated/, written by ``python -m coft_utils run``/``make book``).
Nothing is re-run here: run ``make book`` (or ``python -m coft_utils run ...``) first."""
import json
from pathlib import Path

GEN = Path(__file__).resolve().parents[1] / "book" / "_generated"


def run(quick: bool = False) -> dict:
    out = {}
    for nb in sorted(GEN.glob("[0-9][0-9]_*.ipynb")):
        meta = json.loads(nb.read_text()).get("metadata", {}).get("coft", {})
        if "wall_s" in meta:
            out[f"chapters.{nb.stem}.{meta.get('profile', '?')}.wall_s"] = meta["wall_s"]
    return out
