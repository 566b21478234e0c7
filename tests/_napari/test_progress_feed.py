"""A napari progress bar fed with engine reports: at most one change per FEED_MS, the last
one always shown (napari's bar runs the event loop on each change)."""

import time

from napari_cases import pump

from napari_stainfuser.progress import Progress


def _report(done, total=100, what="visible"):
    return Progress("stain", done=done, total=total, what=what)


def test_a_burst_of_reports_moves_the_bar_a_few_times_and_ends_on_the_last(make_napari_viewer):
    from napari.utils import progress

    from napari_stainfuser._napari._qt.threads import FEED_MS, ProgressFeed

    make_napari_viewer()
    bar = progress(total=0, desc="live")
    moves, descriptions = [], []
    bar.events.value.connect(lambda e: moves.append(e.value))
    bar.events.description.connect(lambda e: descriptions.append(e.value))
    feed = ProgressFeed(bar)
    t0 = time.monotonic()
    for i in range(1, 41):
        feed.advance(_report(i), "stain normalization (visible)")
        pump(0.005)
    burst = time.monotonic() - t0
    assert pump(2, lambda: bar.n == 40)
    assert bar.total == 100
    # One move at once, then at most one per FEED_MS (and the trailing one).
    assert moves[0] == 1 and moves[-1] == 40
    assert len(moves) <= burst * 1000 / FEED_MS + 2 < 40
    assert descriptions.count("stain normalization (visible)") == 1
    feed.advance(_report(41, what="prefetch"), "stain normalization (prefetch)")
    assert pump(2, lambda: bar.n == 41)
    assert descriptions[-1] == "stain normalization (prefetch)"
    feed.close()
    assert feed.bar is None
    feed.advance(_report(42), "after close")  # a report that was queued: dropped
