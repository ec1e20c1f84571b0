"""Every pinned revision of every built-in hub series is in the stored public list of that
repository's branches (``series.PUBLIC_BRANCHES``; the sources are named in series.py and
book/checkpoints.md), and no series pins two branches known to hold the same weights."""
import re

import pytest

from coft_utils.foundation import series


@pytest.mark.parametrize("name", sorted(series.SERIES))
def test_each_builtin_revision_is_in_the_public_branch_list(name):
    s = series.SERIES[name]
    for c in s:
        assert c.hub_id in series.PUBLIC_BRANCHES, (name, c.hub_id)
        assert c.revision in series.PUBLIC_BRANCHES[c.hub_id], (name, c.label, c.revision)


def test_olmo1b_steps_are_in_the_official_checkpoint_list():
    steps = set(series.OLMO1B_CSV_STEPS)
    assert len(series.OLMO1B_CSV_STEPS) == len(steps) == 351        # rows of OLMo-1B.csv
    assert list(series.OLMO1B_CSV_STEPS) == sorted(steps)
    assert {117850, 330000, 738000, 738020} <= steps
    assert not steps & {200000, 300000}                             # the 117850 -> 330000 gap
    assert not any(117850 < x < 330000 for x in steps)
    for rev in series.OLMO1B_HF_BRANCHES:
        assert series._rev_step(rev) in steps, rev
    # hf token counts are the hub's, not round(step * 4194304 / 1e9)
    assert "step10000-tokens41B" in series.OLMO1B_HF_BRANCHES
    assert "step738000-tokens3094B" in series.OLMO1B_HF_BRANCHES


def test_branch_lists_are_well_formed():
    pat = {"allenai/OLMo-1B-hf": r"step\d+-tokens\d+B", "allenai/OLMo-2-1124-7B": r"stage1-step\d+-tokens\d+B",
           "LLM360/Amber": r"ckpt_\d{3}"}
    for hub_id, names in series.PUBLIC_BRANCHES.items():
        assert len(set(names)) == len(names), hub_id
        rx = pat.get(hub_id, r"step\d+")
        assert all(re.fullmatch(rx, n) for n in names), hub_id
    assert len(series.PYTHIA_BRANCHES) == 154 and series.PYTHIA_BRANCHES[-1] == "step143000"  # pythia README
    assert series.AMBER_BRANCHES[0] == "ckpt_000" and series.AMBER_BRANCHES[-1] == "ckpt_358"
    assert "stage1-step100000-tokens420B" not in series.OLMO2_7B_BRANCHES


def test_no_series_pins_two_branches_with_known_identical_weights():
    for name, s in series.SERIES.items():
        revs = {c.revision for c in s}
        for hub_id, groups in series.KNOWN_DUPLICATES.items():
            for g in groups:
                assert len(revs & set(g)) <= 1, (name, g)
            for g in groups:
                assert set(g) <= set(series.PUBLIC_BRANCHES[hub_id]), g


def test_labels_follow_tokens():
    for s in series.SERIES.values():
        for c in s:
            if c.hub_id != "LLM360/Amber":
                step = series._rev_step(c.revision)
                assert c.tokens == step * (2_097_152 if "pythia" in c.hub_id else 4_194_304)
