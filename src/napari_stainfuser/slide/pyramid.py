"""Lazy 2x area-averaged pyramids, built chunk by chunk with dask.

Used by the reader (files without a pyramid) and by the writers (lower levels
of an output pyramid), so both produce the same pixels.
"""

import dask.array as da
import numpy as np

MIN_LEVEL_SIZE = 1024


def _halve_block(block: np.ndarray) -> np.ndarray:
    # uint16 sum of four uint8 values cannot overflow; +2 rounds half up.
    b = block.astype(np.uint16)
    s = b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def _even_chunks(chunks: tuple[int, ...], size: int) -> tuple[int, ...]:
    """Chunk sizes for an axis of even `size` where every chunk is even."""
    if all(c % 2 == 0 for c in chunks):
        return chunks
    step = max(2, chunks[0] + chunks[0] % 2)
    out = [step] * (size // step)
    if size % step:
        out.append(size % step)
    return tuple(out)


def downsample2x(level: da.Array, target_chunk: int | None = None) -> da.Array:
    """Halve a Y×X×C uint8 dask array by 2×2 area averaging (odd edges trimmed).

    Output chunks are aligned with input chunks and merged back up to
    `target_chunk` (default: the input's first chunk size) so deep levels do
    not degenerate into thousands of tiny tasks.
    """
    h, w = (level.shape[0] // 2) * 2, (level.shape[1] // 2) * 2
    if h == 0 or w == 0:
        raise ValueError(f"cannot downsample an image of shape {level.shape}")
    x = level[:h, :w]
    x = x.rechunk((_even_chunks(x.chunks[0], h), _even_chunks(x.chunks[1], w), x.chunks[2]))
    out_chunks = (
        tuple(c // 2 for c in x.chunks[0]),
        tuple(c // 2 for c in x.chunks[1]),
        x.chunks[2],
    )
    out = x.map_blocks(_halve_block, chunks=out_chunks, dtype=np.uint8)
    tc = target_chunk or level.chunks[0][0]
    tc_x = target_chunk or level.chunks[1][0]
    if out.chunks[0][0] < tc or out.chunks[1][0] < tc_x:
        out = out.rechunk((tc, tc_x, out.chunks[2]))
    return out


def build_pyramid(level0: da.Array, min_size: int = MIN_LEVEL_SIZE) -> list[da.Array]:
    """Level 0 plus lazy 2× levels until the longest side is at most `min_size`."""
    levels = [level0]
    while max(levels[-1].shape[:2]) > min_size and min(levels[-1].shape[:2]) >= 2:
        levels.append(downsample2x(levels[-1], target_chunk=level0.chunks[0][0]))
    return levels
