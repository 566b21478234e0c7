"""(source, target, stylised) triplet sets on disk, and how training reads them.

A triplet set is a folder in one of two layouts.

1. The layout ``stainfuser make-pairs`` writes, described by ``manifest.csv``::

       DATA/manifest.csv            columns source,target,stylised[,...]: paths
                                    relative to DATA, one triplet per row
       DATA/source/<source>.png
       DATA/target/<target>.png
       DATA/stylised/<target>/<source>.png

2. Three parallel folders, matched by file name (without extension)::

       DATA/source/NAME.png   the tile to re-stain (the ControlNet's input)
       DATA/target/NAME.png   the style example
       DATA/stylised/NAME.png the source re-stained in the target's style

Images are RGB PNG, JPEG or TIFF, 8 bit. Source and stylised tiles of a
triplet are pixel-aligned and of equal size; the target may have any size
at least the training crop.

Each training sample is cut from its triplet by :class:`TripletCrop`: a
random ``size``² crop at full resolution, or, with mixed magnification, with
probability 1/2 the whole tile downscaled 2× (then cropped if still larger),
so the model sees two magnifications, as the published model was trained
(a 1024² tile at 40× gives a 512² crop at 40× or the tile at 20×).
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ParameterError
from .tileio import IMAGE_SUFFIXES, read_rgb

MANIFEST_NAME = "manifest.csv"
MANIFEST_FIELDS = ("source", "target", "stylised")


@dataclass(frozen=True)
class Triplet:
    source: Path
    target: Path
    stylised: Path


def _stems(folder: Path) -> dict[str, Path]:
    files = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in files:
                raise ParameterError(f"{folder}: two images share the name {p.stem!r}")
            files[p.stem] = p
    return files


def read_manifest(path) -> list[Triplet]:
    """Triplets listed in a manifest CSV (paths relative to its folder)."""
    path = Path(path)
    root = path.parent
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [f for f in MANIFEST_FIELDS if f not in (reader.fieldnames or [])]
            if missing:
                raise ParameterError(f"{path}: manifest lacks the column(s) {', '.join(missing)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ParameterError(f"{path}: cannot read manifest ({exc})") from None
    return [Triplet(*(root / row[f] for f in MANIFEST_FIELDS)) for row in rows]


def find_triplets(root) -> list[Triplet]:
    """All triplets of a triplet-set folder (either layout), checked to exist."""
    root = Path(root)
    if not root.is_dir():
        raise ParameterError(f"training data {root}: not a folder")
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        triplets = read_manifest(manifest)
    else:
        folders = {name: root / name for name in MANIFEST_FIELDS}
        absent = [name for name, f in folders.items() if not f.is_dir()]
        if absent:
            raise ParameterError(
                f"training data {root}: no {MANIFEST_NAME} and no {'/, '.join(absent)}/ folder "
                "(expected source/, target/, stylised/ with matching file names)"
            )
        files = {name: _stems(f) for name, f in folders.items()}
        names = sorted(files["source"])
        unmatched = [n for n in names if n not in files["target"] or n not in files["stylised"]]
        if unmatched:
            raise ParameterError(
                f"training data {root}: {len(unmatched)} source tile(s) lack a target or "
                f"stylised file of the same name (first: {unmatched[0]!r})"
            )
        triplets = [Triplet(*(files[f][n] for f in MANIFEST_FIELDS)) for n in names]
    if not triplets:
        raise ParameterError(f"training data {root}: no triplets found")
    for t in triplets:
        for p in (t.source, t.target, t.stylised):
            if not p.is_file():
                raise ParameterError(f"training data {root}: {p} is listed but does not exist")
    return triplets


# PIL modes that read_rgb turns into 8-bit RGB (bilevel, grey, palette, RGB, RGBA).
_READABLE_MODES = ("1", "L", "P", "RGB", "RGBA")


def image_header(path: Path) -> tuple[int, int]:
    """(height, width) of an image from its header alone; ParameterError if
    :func:`read_rgb` would refuse it (not an image, not 8-bit grey/RGB)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode, (w, h) = im.mode, im.size
            tile = im.tile[0] if im.tile else None
    except Exception as exc:  # PIL raises OSError, ValueError, DecompressionBombError, ...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ParameterError(f"{path}: cannot be read as an image ({reason})") from None
    # PIL shows 16-bit RGB as mode "RGB"; its raw mode still says ";16".
    args = tile.args if tile is not None else None
    raw = args if isinstance(args, str) else (args[0] if args else "")
    if mode not in _READABLE_MODES or ";16" in str(raw):
        raise ParameterError(f"{path}: expected an 8-bit RGB or grey image, got {raw or mode}")
    return h, w


def check_triplets(triplets: list[Triplet], size: int, mixed_magnification: bool) -> None:
    """Check every triplet from the image headers: readable, aligned, big enough.

    Reads headers only (fast on millions of tiles); a file whose pixels are
    corrupt past its header is still reported when it is first read.
    """
    need = 2 * size if mixed_magnification else size
    why = f"the training size {size}" + (
        " × 2 (mixed magnification downscales whole tiles 2×)" if mixed_magnification else ""
    )
    for t in triplets:
        source, target, stylised = (image_header(p) for p in (t.source, t.target, t.stylised))
        if source != stylised:
            raise ParameterError(
                f"{t.stylised}: stylised tile {stylised[1]}×{stylised[0]} is not aligned with "
                f"its source {t.source} ({source[1]}×{source[0]})"
            )
        for path, (h, w), what in ((t.source, source, "tile"), (t.target, target, "target")):
            if h < need or w < need:
                raise ParameterError(f"{path}: {what} {w}×{h} is smaller than {why}")


def downscale2(image: np.ndarray) -> np.ndarray:
    """Halve an H×W×3 uint8 image by averaging 2×2 blocks (an odd last row/column is dropped)."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    blocks = image[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).astype(np.float32)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def _crop(image: np.ndarray, size: int, rng: np.random.Generator, path: Path, what: str):
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ParameterError(f"{path}: {what} {w}×{h} is smaller than the training size {size}")
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return image[y : y + size, x : x + size], (y, x)


@dataclass(frozen=True)
class TripletCrop:
    """Cut one training sample (three ``size``² uint8 crops) from a triplet."""

    size: int = 512
    mixed_magnification: bool = False

    def __call__(self, t: Triplet, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        source, target, stylised = read_rgb(t.source), read_rgb(t.target), read_rgb(t.stylised)
        if source.shape != stylised.shape:
            raise ParameterError(
                f"{t.stylised}: stylised tile {stylised.shape[1]}×{stylised.shape[0]} is not "
                f"aligned with its source {t.source} ({source.shape[1]}×{source.shape[0]})"
            )
        what = "tile"
        if self.mixed_magnification and rng.random() < 0.5:
            source, target, stylised = downscale2(source), downscale2(target), downscale2(stylised)
            what = "tile downscaled 2×"
        source, (y, x) = _crop(source, self.size, rng, t.source, what)
        stylised = stylised[y : y + self.size, x : x + self.size]
        target, _ = _crop(target, self.size, rng, t.target, f"target {what}")
        return {"source": source, "target": target, "stylised": stylised}


def mix_seed(*keys: int) -> int:
    """A well-mixed non-negative 63-bit seed from integer keys (seed, step, stream...)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


class TripletDataset(torch.utils.data.Dataset):
    """Indexed by ``(triplet index, sample seed)`` pairs from :class:`StepBatchSampler`.

    Returns a dict of 3×size×size uint8 tensors: source, target, stylised.
    """

    def __init__(self, root, size: int = 512, mixed_magnification: bool = False):
        self.root = Path(root)
        self.triplets = find_triplets(root)
        self.crop = TripletCrop(size, mixed_magnification)

    def check(self) -> None:
        """Refuse unreadable, misaligned or too small triplets before training starts."""
        check_triplets(self.triplets, self.crop.size, self.crop.mixed_magnification)

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, item) -> dict[str, torch.Tensor]:
        index, seed = item
        sample = self.crop(self.triplets[index], seed)
        return {
            k: torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1)))
            for k, v in sample.items()
        }


class StepBatchSampler(torch.utils.data.Sampler):
    """The batches of training steps ``start .. stop-1``, a pure function of the seed.

    Samples run through one shuffled pass of the data after another (an
    epoch's order depends only on the seed and the epoch number), and batch
    ``s`` is samples ``s·B .. s·B+B-1`` of that stream; each sample also
    carries its own augmentation seed. So any step's batch can be rebuilt
    without replaying the steps before it, which is what makes ``--resume``
    exact.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.stop = start, stop
        self._epoch, self._order = None, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 1))
            self._epoch, self._order = epoch, torch.randperm(self.n, generator=gen).tolist()
        return self._order[offset]

    def batch(self, step: int) -> list[tuple[int, int]]:
        first = step * self.batch_size
        return [
            (self._index(p), mix_seed(self.seed, p, 2))
            for p in range(first, first + self.batch_size)
        ]

    def epoch_of(self, step: int) -> int:
        return step * self.batch_size // self.n

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
