"""Levels made in the background: they answer at once, with stand-ins, then their pixels.

A real synthetic pyramid (lazy dask levels) whose blocks wait at a gate, so
what a level answers before and after its blocks are made is not a race.
"""

import os
import sys
import threading
import time

import numpy as np
import pytest

from napari_stainfuser._napari.background import (
    BACKGROUND_NICENESS,
    BackgroundPyramid,
    pixels_of,
)
from napari_stainfuser.slide.synthetic import SyntheticTissue

GLASS = 240


def _levels(shape=(2048, 2048)):
    return SyntheticTissue(seed=4, mpp=0.5).pyramid_he(shape, min_size=256, chunks=256)


def _gated(levels, gate, seen=None):
    def wait(block):
        # Only the background waits: the test's own reads (and the writer's) pass.
        if threading.current_thread().name == "stainfuser-background":
            if seen is not None:
                seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            gate.wait(60)
        return block

    # meta given: dask would otherwise call the function once to find it, here.
    return [lv.map_blocks(wait, meta=np.empty((0, 0, 0), lv.dtype)) for lv in levels]


def _until(cond, timeout=60.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


def _threads():
    return [t for t in threading.enumerate() if t.name == "stainfuser-background"]


def test_a_level_answers_with_glass_then_its_pixels_then_stand_ins_from_the_overview():
    levels = _levels()
    gate = threading.Event()
    pyramid = BackgroundPyramid(_gated(levels, gate), fill=GLASS)
    real = [np.asarray(lv) for lv in levels]
    top = pyramid.levels[0]
    assert top.shape == real[0].shape and top.dtype == np.uint8

    # Nothing made yet: glass, and the blocks are asked for.
    first = top[100:700, 200:900]
    assert first.shape == (600, 700, 3) and (first == GLASS).all()
    assert pyramid.pending() > 0

    gate.set()
    assert _until(lambda: pyramid.pending() == 0)
    np.testing.assert_array_equal(top[100:700, 200:900], real[0][100:700, 200:900])
    np.testing.assert_array_equal(np.asarray(pyramid.levels[-1]), real[-1])
    assert pyramid.is_made(0, 100, 700, 200, 900)

    # A block not made yet shows the overview (the coarsest level, made first),
    # enlarged by nearest neighbour.
    gate.clear()
    y0, y1, x0, x1 = 1100, 1900, 1300, 2048
    assert not pyramid.is_made(0, y0, y1, x0, x1)
    stand_in = top[y0:y1, x0:x1]
    f = 2 ** (len(levels) - 1)
    iy = np.minimum(np.arange(y0, y1) // f, real[-1].shape[0] - 1)
    ix = np.minimum(np.arange(x0, x1) // f, real[-1].shape[1] - 1)
    np.testing.assert_array_equal(stand_in, real[-1][iy][:, ix])
    assert not np.array_equal(stand_in, real[0][y0:y1, x0:x1])
    # Steps and integer indices work as on the array itself.
    gate.set()
    assert _until(lambda: pyramid.pending() == 0)
    np.testing.assert_array_equal(top[y0:y1:3, x0], real[0][y0:y1:3, x0])


def test_the_real_pixels_are_never_stand_ins():
    levels = _levels()
    gate = threading.Event()
    pyramid = BackgroundPyramid(_gated(levels, gate), fill=GLASS)
    assert pixels_of(pyramid.levels[2]) is pyramid.levels[2].array
    plain = np.zeros((4, 4, 3), np.uint8)
    assert pixels_of(plain) is plain
    gate.set()
    np.testing.assert_array_equal(np.asarray(pixels_of(pyramid.levels[1])), np.asarray(levels[1]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority")
def test_blocks_are_made_below_the_ui_threads_priority_by_threads_that_then_end():
    gate = threading.Event()
    gate.set()
    seen = []
    ui = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    pyramid = BackgroundPyramid(_gated(_levels(), gate, seen), fill=GLASS, workers=2)
    pyramid.levels[0][0:512, 0:512]
    assert _until(lambda: pyramid.pending() == 0)
    assert seen and all(p == min(ui + BACKGROUND_NICENESS, 19) for p in seen)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == ui
    assert _until(lambda: not _threads(), timeout=10)


def test_a_failing_block_keeps_its_stand_in_and_the_rest_are_made():
    levels = _levels()

    def broken(block, block_info=None):
        if block_info[None]["chunk-location"][:2] == (2, 2):
            raise OSError("unreadable block")
        return block

    failing = [levels[0].map_blocks(broken, meta=np.empty((0, 0, 0), np.uint8)), *levels[1:]]
    pyramid = BackgroundPyramid(failing, fill=GLASS)
    pyramid.levels[0][0:1024, 0:1024]
    assert _until(lambda: pyramid.pending() == 0)
    out = pyramid.levels[0][0:1024, 0:1024]
    real = np.asarray(levels[0][0:1024, 0:1024])
    np.testing.assert_array_equal(out[:512, :512], real[:512, :512])
    assert not np.array_equal(out[512:, 512:], real[512:, 512:])
    assert pyramid.pending() == 0  # not asked for again and again


def test_the_writer_saves_the_real_pixels_of_levels_not_made_yet(tmp_path):
    from napari_stainfuser._napari.writer import write_image
    from napari_stainfuser.slide import open_slide

    levels = _levels()
    gate = threading.Event()  # closed: nothing is made in the background
    pyramid = BackgroundPyramid(_gated(levels[1:], gate), fill=GLASS)
    out = tmp_path / "copy.ome.zarr"
    write_image(str(out), pyramid.levels, {"rgb": True, "multiscale": True})
    assert pyramid.pending() > 0  # still nothing made: the writer read the tissue itself
    gate.set()
    np.testing.assert_array_equal(open_slide(out).levels[0].compute(), np.asarray(levels[1]))


def _enlarged(coarse, f, y0, y1, x0, x1):
    """Nearest neighbour, written independently: level-0 pixel y is coarse pixel y // f,
    the last one where the coarse level ends first (levels halve rounding down)."""
    iy = np.minimum(np.arange(y0, y1) // f, coarse.shape[0] - 1)
    ix = np.minimum(np.arange(x0, x1) // f, coarse.shape[1] - 1)
    return coarse[iy][:, ix]


def test_stand_ins_at_the_ragged_edge_and_from_a_level_between():
    # 2053 px: the last block of level 0 is 5 px wide, narrower than the overview's 8×.
    levels = _levels((2053, 2053))
    real = [np.asarray(lv) for lv in levels]
    assert [lv.shape[0] for lv in levels] == [2053, 1026, 513, 256]
    gate = threading.Event()
    gate.set()
    pyramid = BackgroundPyramid(_gated(levels, gate), fill=GLASS, workers=1)
    assert _until(lambda: pyramid.pending() == 0)  # the overview
    gate.clear()
    corner = pyramid.levels[0][1700:2053, 1900:2053]
    np.testing.assert_array_equal(corner, _enlarged(real[3], 8, 1700, 2053, 1900, 2053))
    # Level 1 made over a region: level 0 there shows level 1 enlarged 2×, not the overview.
    gate.set()
    pyramid.levels[1][256:768, 0:512]
    assert _until(lambda: pyramid.pending() == 0)
    gate.clear()
    part = pyramid.levels[0][512:1536, 100:1000]
    np.testing.assert_array_equal(part, _enlarged(real[1], 2, 512, 1536, 100, 1000))
    gate.set()
