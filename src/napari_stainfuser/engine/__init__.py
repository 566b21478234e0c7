"""The device worker: a thread that owns the stainer and serves tile requests
by priority, in batches, with cancel, progress callbacks and clean shutdown.
No Qt here."""

from ..progress import Progress
from .worker import BACKGROUND, NEARBY, VISIBLE, Engine, TileOutput, stain_batch

__all__ = ["BACKGROUND", "NEARBY", "VISIBLE", "Engine", "Progress", "TileOutput", "stain_batch"]
