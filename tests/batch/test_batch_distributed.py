"""Runs on dask.distributed: same output as one process, even when a worker dies."""

import os
import signal

import numpy as np
import pytest
from batch_cases import FAST, TARGET, WEIGHTS, read_level0

from napari_stainfuser.batch import normalize_slide
from napari_stainfuser.stainers import make_stainer

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow


def test_local_cluster_output_equals_single_process(cmu_crop, tmp_path):
    stainer = make_stainer("macenko", TARGET, slide=cmu_crop, **FAST)
    one = normalize_slide(cmu_crop, tmp_path / "one.ome.zarr", stainer=stainer, tile=128)
    two = normalize_slide(
        cmu_crop, tmp_path / "two.ome.zarr", stainer=stainer, tile=128, scheduler="local:2"
    )
    np.testing.assert_array_equal(read_level0(two), read_level0(one))


def test_a_worker_killed_mid_run_has_its_tiles_retried_and_nothing_changes(synth, tmp_path):
    image = synth[:320, :416]
    kw = dict(method="stainfuser", target=TARGET, weights=WEIGHTS, steps=2, tile=128,
              overlap=32, seed=3, batch_size=1, mpp=0.5)  # fmt: skip
    ref = read_level0(normalize_slide(image, tmp_path / "ref.ome.zarr", **kw))

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=50
    )
    client = distributed.Client(cluster)
    try:
        pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]
        killed = []

        def kill_once(p):
            if p.phase == "stain" and p.done >= 2 and not killed:
                os.kill(victim, signal.SIGKILL)
                killed.append(p.done)

        out = normalize_slide(
            image, tmp_path / "out.ome.zarr", scheduler=cluster.scheduler_address,
            progress=kill_once, **kw,
        )  # fmt: skip
        total = 3 * 4
        assert killed and killed[0] < total  # killed while tiles were still to do
        with pytest.raises(ProcessLookupError):
            os.kill(victim, 0)
    finally:
        client.close()
        cluster.close()
    np.testing.assert_array_equal(read_level0(out), ref)
