"""Running a CLI command in a fresh interpreter and reporting which heavy modules it
loaded: an argument error must be found before any of them."""

import subprocess
import sys

HEAVY = ("torch", "dask", "zarr", "diffusers", "tifffile")

_CHECK = f"""
import sys
from napari_stainfuser.cli import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print("loaded:", ",".join(heavy))
sys.exit(rc)
"""


def run_reporting_imports(args, timeout=60) -> subprocess.CompletedProcess:
    """``stainfuser ARGS``; its stdout's last line is ``loaded: <heavy modules>``."""
    return subprocess.run(
        [sys.executable, "-c", _CHECK, *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
