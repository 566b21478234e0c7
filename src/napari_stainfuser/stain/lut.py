"""A 256³ RGB lookup table: any per-pixel colour map as one gather.

Once a normalizer's source and target statistics are fixed, its output at a
pixel is a pure function of that pixel's RGB triple. Evaluating the function
once on all 16,777,216 triples turns every later transform into
``table[r << 16 | g << 8 | b]``. The table *is* the function evaluated through
the same code on the same uint8 inputs, so the output cannot depend on how a
slide is tiled, and the gather runs at memory speed instead of doing logs,
exps and matrix products per pixel.

Each entry is one little-endian 32-bit word whose bytes are R, G, B, 0
(64 MB in all). Four-byte entries cost a third more memory than packed RGB,
but numpy's ``take`` copies them with one load and store each instead of a
``memmove`` per pixel, which halves the gather time on real slides.
"""

from collections.abc import Callable

import numpy as np
import torch

from ._threads import run_all

N_COLOURS = 1 << 24
_ENTRY = np.dtype("<u4")
_BUILD_CHUNK = 1 << 18
# Below this many pixels a thread hand-off costs more than it saves.
_PARALLEL_MIN = 1 << 19
# Small enough that a block's indices and words stay in L2.
_ROWS_PER_JOB = 1 << 16


def all_colours(start: int, stop: int) -> torch.Tensor:
    """The RGB triples with indices start..stop-1, planar (3×N uint8)."""
    i = torch.arange(start, stop, dtype=torch.int32)
    return torch.stack([i >> 16, (i >> 8) & 255, i & 255]).to(torch.uint8)


def build_lut(fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """Evaluate ``fn`` (planar 3×N uint8 -> 3×N uint8) on every RGB triple;
    returns the 2^24 table of R, G, B, 0 words."""
    table = np.zeros(N_COLOURS, _ENTRY)
    entry_bytes = torch.from_numpy(table.view(np.uint8).reshape(N_COLOURS, 4))

    def job(start: int) -> None:
        with torch.inference_mode():
            rgb = fn(all_colours(start, start + _BUILD_CHUNK))
            entry_bytes[start : start + _BUILD_CHUNK, :3] = rgb.T

    run_all(job, range(0, N_COLOURS, _BUILD_CHUNK))
    return table


def _block(n: int, images: int = 1) -> int:
    """Pixels per job for ``images`` images of ``n`` pixels each."""
    return max(n, 1) if n * images < _PARALLEL_MIN else _ROWS_PER_JOB


def _run_blocks(job: Callable, keys: list) -> None:
    # take and the copies release the GIL, so blocks run on all cores.
    if len(keys) == 1:
        job(keys[0])
    else:
        run_all(job, keys)


def _gather_interleaved(table: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
    """Look up m×3 C-contiguous uint8 pixels ``src`` into ``dst`` (same shape)."""
    m = src.shape[0]
    idx = np.empty(m, np.intp)
    r, g, b = (int(v) for v in src[-1])
    idx[-1] = r << 16 | g << 8 | b
    if m > 1:
        # Bytes r, g, b of one pixel and r of the next, read as a big-endian
        # word and shifted right by 8, are that pixel's index: one pass
        # instead of a widen, two shifts and two ors.
        words = np.ndarray((m - 1,), dtype=">u4", buffer=src, strides=(3,))
        np.right_shift(words, 8, out=idx[:-1], casting="unsafe")
    # Indices made from bytes are always in range: "clip" skips numpy's check.
    entries = table.take(idx, mode="clip")
    if m > 1:
        # Store each R, G, B, 0 word at its pixel; the 0 lands on the next
        # pixel's R, which the pass below rewrites, so store order is irrelevant.
        np.ndarray((m - 1,), dtype=_ENTRY, buffer=dst, strides=(3,))[...] = entries[:-1]
    entry_bytes = entries.view(np.uint8).reshape(m, 4)
    dst[-1] = entry_bytes[-1, :3]
    dst[:, 0] = entry_bytes[:, 0]


def apply_lut(table: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Look up every pixel of an (...)×3 uint8 array; same shape out."""
    flat = np.ascontiguousarray(rgb).reshape(-1, 3)
    out = np.empty_like(flat)
    n = flat.shape[0]
    step = _block(n)

    def job(s: int) -> None:
        rows = slice(s, s + step)
        _gather_interleaved(table, flat[rows], out[rows])

    _run_blocks(job, list(range(0, n, step)))
    return out.reshape(rgb.shape)


def apply_lut_planar(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Look up a B×3×H×W uint8 array (planar, as torch holds images); same
    shape out. Works on the planes directly, so no transpose copies."""
    bsz, _, h, w = x.shape
    planes = np.ascontiguousarray(x).reshape(bsz, 3, h * w)
    out = np.empty_like(planes)
    n = h * w
    step = _block(n, bsz)

    def job(key: tuple[int, int]) -> None:
        b, s = key
        cols = slice(s, s + step)
        r, g, bl = planes[b, 0, cols], planes[b, 1, cols], planes[b, 2, cols]
        idx = r.astype(np.intp)
        idx <<= 8
        idx |= g
        idx <<= 8
        idx |= bl
        entry_bytes = table.take(idx, mode="clip").view(np.uint8).reshape(-1, 4)
        for c in range(3):
            out[b, c, cols] = entry_bytes[:, c]

    _run_blocks(job, [(b, s) for b in range(bsz) for s in range(0, n, step)])
    return out.reshape(x.shape)


def apply_lut_torch(table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Look up a B×3×H×W uint8 tensor on its device; ``table`` is the lookup
    table as an int32 tensor on that device."""
    xi = x.to(torch.int32)
    idx = (xi[:, 0] << 16) | (xi[:, 1] << 8) | xi[:, 2]
    entries = torch.index_select(table, 0, idx.reshape(-1))
    rgb = entries.view(torch.uint8).reshape(*idx.shape, 4)[..., :3]
    return rgb.permute(0, 3, 1, 2).contiguous()
