"""The device worker: priorities, batching, cancel, errors, shutdown, threads."""

import threading

import numpy as np
import pytest
import torch

from napari_stainfuser.engine import BACKGROUND, VISIBLE, Engine
from napari_stainfuser.stainer import StainerSpec, StainResult

TIMEOUT = 20


class Inverter:
    """A real (if simple) per-pixel stainer: 255 - x. It logs the id painted
    into each tile's first pixel, can be held at a gate, and refuses tiles
    whose id is in ``poison``."""

    def __init__(self, batch_size=4, poison=()):
        self.spec = StainerSpec(tile_size=8, batch_size=batch_size)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.poison = set(poison)
        self.seen: list[list[int]] = []

    def stain(self, tiles, noise=None):
        ids = [int(t[0, 0, 0]) for t in tiles]
        self.entered.set()
        assert self.gate.wait(TIMEOUT)
        if self.poison & set(ids):
            raise RuntimeError(f"cannot stain tiles {sorted(self.poison & set(ids))}")
        self.seen.append(ids)
        return StainResult(255 - tiles, {"ids": tiles[:, :1].clone()})


def tile(i):
    t = np.full((8, 8, 3), 200, np.uint8)
    t[0, 0, 0] = i
    return lambda: (t, None)


def _hold(engine, stainer):
    """Occupy the worker with one request so the queue can be arranged."""
    stainer.gate.clear()
    fut = engine.submit("hold", tile(250), VISIBLE)
    assert stainer.entered.wait(TIMEOUT)
    return fut


def test_results_are_the_stainer_output_in_hwc_uint8():
    s = Inverter()
    with Engine(s) as e:
        futs = [e.submit(i, tile(i)) for i in range(10)]
        for i, f in enumerate(futs):
            out = f.result(TIMEOUT)
            assert out.tile.dtype == np.uint8 and out.tile.shape == (8, 8, 3)
            assert out.tile[0, 0, 0] == 255 - i and out.tile[5, 5, 2] == 55
            # Each extra output comes back as one H×W float plane per tile.
            assert out.extras["ids"].shape == (8, 8) and out.extras["ids"][0, 0] == i


def test_visible_request_jumps_the_queue_and_batches_do_not_mix_priorities():
    s = Inverter(batch_size=4)
    with Engine(s) as e:
        hold = _hold(e, s)
        bg = [e.submit(i, tile(i), BACKGROUND) for i in range(1, 13)]
        vis = e.submit(100, tile(100), VISIBLE)
        s.gate.set()
        vis.result(TIMEOUT)
        for f in bg:
            f.result(TIMEOUT)
        hold.result(TIMEOUT)
    assert s.seen[0] == [250]
    assert s.seen[1] == [100]  # alone: not padded out with background tiles
    assert s.seen[2:] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]


def test_prioritise_moves_queued_requests_forward():
    s = Inverter(batch_size=1)
    with Engine(s) as e:
        _hold(e, s)
        futs = {i: e.submit(i, tile(i), BACKGROUND) for i in range(1, 6)}
        assert e.prioritise([4, 5, 999], VISIBLE) == 2
        s.gate.set()
        for f in futs.values():
            f.result(TIMEOUT)
    assert [x[0] for x in s.seen[1:]] == [4, 5, 1, 2, 3]


def test_cancel_drops_requests_before_they_reach_the_device():
    s = Inverter(batch_size=2)
    with Engine(s) as e:
        hold = _hold(e, s)
        futs = [e.submit(i, tile(i), BACKGROUND) for i in range(1, 9)]
        assert e.cancel([2, 4, 6]) == 3
        assert futs[7].cancel()  # the caller may also cancel a future directly
        s.gate.set()
        hold.result(TIMEOUT)
        for i, f in enumerate(futs, start=1):
            if i in (2, 4, 6, 8):
                assert f.cancelled()
            else:
                assert f.result(TIMEOUT).tile[0, 0, 0] == 255 - i
        assert e.wait_idle(TIMEOUT)
        assert e.progress().cancelled == 4
    processed = {i for batch in s.seen for i in batch}
    assert processed == {250, 1, 3, 5, 7}


def test_a_failing_batch_fails_only_its_tiles_and_the_worker_carries_on():
    s = Inverter(batch_size=2, poison={3})
    errors = []
    with Engine(s, on_error=lambda keys, exc: errors.append((sorted(keys), str(exc)))) as e:
        hold = _hold(e, s)
        futs = {i: e.submit(i, tile(i), BACKGROUND) for i in range(1, 7)}
        s.gate.set()
        hold.result(TIMEOUT)
        for i, f in futs.items():
            if i in (3, 4):  # batched together
                with pytest.raises(RuntimeError, match="cannot stain tiles"):
                    f.result(TIMEOUT)
            else:
                assert f.result(TIMEOUT).tile[0, 0, 0] == 255 - i

        # A failed load fails one tile only.
        def bad():
            raise OSError("tile 9: cannot decode")

        f_bad, f_ok = e.submit(9, bad), e.submit(10, tile(10))
        with pytest.raises(OSError, match="cannot decode"):
            f_bad.result(TIMEOUT)
        assert f_ok.result(TIMEOUT).tile[0, 0, 0] == 245
        assert e.alive
        p = e.progress()
    assert errors[0][0] == [3, 4] and "cannot stain" in errors[0][1]
    assert errors[1][0] == [9]
    assert p.failed == 3 and p.done == 1 + 4 + 1


def test_resubmitting_a_queued_key_returns_the_same_future():
    s = Inverter(batch_size=1)
    with Engine(s) as e:
        _hold(e, s)
        a = e.submit("k", tile(1), BACKGROUND)
        b = e.submit("k", tile(1), VISIBLE)
        assert a is b
        c = e.submit("j", tile(2), BACKGROUND)
        s.gate.set()
        a.result(TIMEOUT), c.result(TIMEOUT)
    # The resubmission raised its priority; no tile ran twice.
    assert [x[0] for x in s.seen] == [250, 1, 2]


def test_shutdown_cancels_pending_and_joins():
    s = Inverter(batch_size=1)
    e = Engine(s)
    hold = _hold(e, s)
    futs = [e.submit(i, tile(i)) for i in range(5)]
    threading.Timer(0.2, s.gate.set).start()
    e.shutdown()
    assert not e.alive
    assert hold.result(0).tile[0, 0, 0] == 5  # the running batch finished
    assert all(f.cancelled() for f in futs)
    with pytest.raises(RuntimeError, match="shut down"):
        e.submit(99, tile(99))


def test_shutdown_can_finish_the_queue_first():
    s = Inverter(batch_size=2)
    progress = []
    e = Engine(s, on_progress=progress.append)
    futs = [e.submit(i, tile(i)) for i in range(7)]
    e.shutdown(cancel_pending=False)
    assert not e.alive
    assert [f.result(0).tile[0, 0, 0] for f in futs] == [255 - i for i in range(7)]
    assert progress[-1].done == 7 and progress[-1].pending == 0
    assert progress[-1].rate > 0 and progress[-1].phase == "stain"


def test_concurrent_submitters_cancellers_and_prioritisers():
    s = Inverter(batch_size=3)
    results = {}
    lock = threading.Lock()
    with Engine(s) as e:

        def submitter(t):
            rng = np.random.default_rng(t)
            mine = {}
            for k in range(40):
                i = t * 40 + k
                mine[i] = e.submit(i, tile(i % 250), int(rng.integers(0, 3)))
                if k % 7 == 3:
                    e.cancel([i - 1])
                if k % 5 == 0:
                    e.prioritise([i - 2, i - 3], VISIBLE)
            with lock:
                results.update(mine)

        threads = [threading.Thread(target=submitter, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert e.wait_idle(TIMEOUT)
        p = e.progress()
    assert len(results) == 240
    done = 0
    for i, f in results.items():
        assert f.done()
        if not f.cancelled():
            assert f.result(0).tile[0, 0, 0] == 255 - i % 250
            done += 1
    assert p.done == done and p.done + p.cancelled == 240 and p.failed == 0
    # Every tile that ran, ran once.
    ran = [i for batch in s.seen for i in batch]
    assert len(ran) == done


def test_a_real_stainer_through_the_engine_equals_calling_it_directly():
    torch.manual_seed(0)
    tiles = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    s = Inverter(batch_size=2)
    direct = s.stain(tiles).tiles.permute(0, 2, 3, 1).numpy()
    with Engine(s) as e:
        futs = [
            e.submit(i, (lambda t=t: (t.permute(1, 2, 0).numpy(), None)))
            for i, t in enumerate(tiles)
        ]
        got = np.stack([f.result(TIMEOUT).tile for f in futs])
    np.testing.assert_array_equal(got, direct)


def test_submit_never_waits_for_the_device():
    s = Inverter()
    with Engine(s) as e:
        _hold(e, s)
        # The device is held at its gate: had submit waited for it, this
        # loop would never finish.
        futs = [e.submit(i, tile(i % 250)) for i in range(200)]
        assert not any(f.done() for f in futs)
        s.gate.set()
        assert futs[-1].result(TIMEOUT).tile[0, 0, 0] == 255 - 199
