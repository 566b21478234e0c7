"""A run killed with SIGKILL mid-way resumes to exactly the uninterrupted output."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from batch_cases import TARGET, WEIGHTS, read_level0

from napari_stainfuser.batch import normalize_slide, work_dir

SCRIPT = """
import sys
from napari_stainfuser.batch import normalize_slide
from napari_stainfuser.slide.synthetic import synthetic_he

def report(p):
    if p.phase == "stain":
        print("stain", p.done, flush=True)

normalize_slide(
    synthetic_he((352, 448), seed=5).compute(), sys.argv[1], method="stainfuser",
    target=sys.argv[2], weights=sys.argv[3], steps=2, tile=128, overlap=32, seed=11,
    batch_size=2, mpp=0.5, progress=report,
)
print("finished", flush=True)
"""

KW = dict(method="stainfuser", target=TARGET, weights=WEIGHTS, steps=2, tile=128, overlap=32,
          seed=11, batch_size=2, mpp=0.5)  # fmt: skip


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_output(tmp_path):
    from napari_stainfuser.slide.synthetic import synthetic_he

    image = synthetic_he((352, 448), seed=5).compute()
    out = tmp_path / "killed.ome.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(out), str(TARGET), str(WEIGHTS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    killed_at = None
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        parts = line.split()
        if parts[:1] == ["stain"] and int(parts[1]) >= 6:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = int(parts[1])
            break
        assert time.monotonic() < deadline, "the run never got going"
    proc.wait(30)
    assert killed_at is not None, proc.stderr.read()[-2000:]
    assert proc.returncode == -signal.SIGKILL
    assert work_dir(out).is_dir() and not out.exists()

    seen = []
    normalize_slide(image, out, resume=True, progress=seen.append, **KW)
    assert next(p for p in seen if p.phase == "stain").done >= killed_at
    assert not work_dir(out).exists()

    ref = normalize_slide(image, tmp_path / "uninterrupted.ome.zarr", **KW)
    resumed, expected = read_level0(out), read_level0(ref)
    np.testing.assert_array_equal(resumed, expected)
    # The model really ran: the output is not the input.
    assert (resumed != image).any(-1).mean() > 0.5
