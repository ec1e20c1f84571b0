"""coft_utils.foundation.parallel: independent units on worker processes of one torch thread each."""
from __future__ import annotations

import os
import time

import pytest

torch = pytest.importorskip("torch")
from coft_utils.foundation import parallel  # noqa: E402


# unit functions: top level of an importable module (the workers import this test module)
def _slow_identity(item):
    time.sleep(item[1])
    return item[0]


def _train_tiny(seed: int) -> list:
    """A deterministic torch computation: a few AdamW steps of a small MLP."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    x, y = torch.randn(256, 32), torch.randn(256, 8)
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in net.parameters()] + [torch.get_num_threads()]


def _fail_on_three(i: int) -> int:
    if i == 3:
        raise ValueError(f"bad value {i}")
    return i


def _env_probe(_):
    return os.environ.get("COFT_RUNS_DIR"), parallel.in_worker()


def _nested(_):
    return parallel.map_units(parallel._probe, [0.0, 0.0], workers=2)


@pytest.fixture(scope="module", autouse=True)
def _stop_pool():
    yield
    parallel.shutdown()


def test_results_come_back_in_input_order():
    items = [(i, 0.3 if i == 0 else 0.02) for i in range(6)]  # the first unit finishes last
    assert parallel.map_units(_slow_identity, items, workers=2) == list(range(6))
    assert parallel.map_units(_slow_identity, items, workers=1) == list(range(6))
    assert parallel.map_units(_slow_identity, [], workers=2) == []


def test_two_workers_equal_one_worker_for_a_deterministic_function():
    one = parallel.map_units(_train_tiny, [0, 1, 2], workers=1)
    two = parallel.map_units(_train_tiny, [0, 1, 2], workers=2)
    for a, b in zip(one, two):
        assert a[-1] == b[-1] == 1, "every unit runs on one torch thread"
        assert all(torch.equal(x, y) for x, y in zip(a[:-1], b[:-1]))
    assert not torch.equal(one[0][0], one[1][0]), "different items, different results"


def test_two_workers_are_two_other_processes_of_one_thread():
    out = parallel.map_units(parallel._probe, [0.4] * 4, workers=2)
    pids = {r["pid"] for r in out}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(r["worker"] and r["torch_threads"] == 1 and r["omp"] == "1" for r in out)
    before = torch.get_num_threads()
    local = parallel.map_units(parallel._probe, [0.0, 0.0], workers=1)
    assert {r["pid"] for r in local} == {os.getpid()} and all(r["torch_threads"] == 1 for r in local)
    assert torch.get_num_threads() == before, "in-process runs restore the caller's thread count"


@pytest.mark.parametrize("workers", [1, 2])
def test_an_exception_names_the_failing_unit(workers):
    with pytest.raises(ValueError, match="bad value 3") as exc:
        parallel.map_units(_fail_on_three, range(6), workers=workers, label=lambda i: f"item-{i}")
    assert exc.value.coft_unit == "item-3"
    assert any("in unit item-3" in n for n in exc.value.__notes__)
    # default label: repr of the item
    with pytest.raises(ValueError, match="in unit 3 "):
        parallel.map_units(_fail_on_three, [3, 1], workers=workers)


def test_workers_see_the_callers_current_environment(monkeypatch, tmp_path):
    for sub in ("a", "b"):  # the reused pool must follow the caller's COFT_* settings
        monkeypatch.setenv("COFT_RUNS_DIR", str(tmp_path / sub))
        out = parallel.map_units(_env_probe, range(3), workers=2)
        assert out == [(str(tmp_path / sub), True)] * 3


def test_no_nested_pools_and_bad_arguments():
    inner = parallel.map_units(_nested, [0, 1], workers=2)
    for rows in inner:  # each inner map ran inside its own worker, in-process
        assert len({r["pid"] for r in rows}) == 1
    with pytest.raises(ValueError, match="workers"):
        parallel.map_units(_probe_none, [1], workers=0)
    with pytest.raises(ValueError, match="threads"):
        parallel.map_units(_probe_none, [1], workers=1, threads=0)


def _probe_none(x):
    return x


def _progress_bars_off(_):
    return os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"), parallel.in_worker()


def test_workers_are_quiet_like_the_kernel(monkeypatch):
    """A worker's stderr is the notebook's: it silences progress bars (transformers' 'Loading
    weights' bar among them) even when the caller's environment does not say so."""
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    assert parallel.map_units(_progress_bars_off, [0, 1], workers=2) == [("1", True), ("1", True)]
