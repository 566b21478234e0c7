"""Counter-based hashing and lattice value noise at global pixel coordinates.

Every number here is a pure function of a key and integer coordinates, never of
a generator's state or of where a chunk starts, so a window of the plane gets
bit-identical values however it is chunked. Grid evaluation is separable
(interpolate lattice rows along x, then along y), which keeps it at about five
array passes per octave.
"""

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
# Odd multipliers, one per coordinate, that spread a coordinate over 64 bits
# before the avalanche mix.
_AXIS = tuple(
    np.uint64(c)
    for c in (0xD6E8FEB86659FD93, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xFF51AFD7ED558CCD)
)
_MASK64 = (1 << 64) - 1


def _mix(h: np.ndarray) -> np.ndarray:
    # splitmix64 finaliser, in place on a fresh array: a bijection on 64 bits
    # with full avalanche. Wrapping multiplication is intended; arrays (unlike
    # numpy scalars) do not warn about it.
    h ^= h >> _S30
    h *= _M1
    h ^= h >> _S27
    h *= _M2
    h ^= h >> _S31
    return h


def _as_u64(c) -> np.ndarray:
    # Negative coordinates wrap to two's complement; still distinct.
    return np.atleast_1d(np.asarray(c, dtype=np.int64)).view(np.uint64)


def hash_coords(key, *coords) -> np.ndarray:
    """64-bit hash of (up to four) broadcast integer coordinates under `key`.

    ``mix(key ^ Σ c_i K_i)``: distinct coordinates give distinct pre-images for
    any range used here, and the mix decorrelates neighbours. Returns an array
    of the broadcast shape, or a numpy scalar when every coordinate is a scalar.
    """
    acc = None
    for c, k in zip(coords, _AXIS, strict=False):
        t = _as_u64(c) * k
        acc = t if acc is None else acc + t
    acc ^= np.uint64(key)
    h = _mix(acc)
    return h[0] if h.shape == (1,) and all(np.ndim(c) == 0 for c in coords) else h


def stream_key(seed: int, stream: int) -> np.uint64:
    """Key of one independent random stream (nuclei, glands, a noise octave...)."""
    return hash_coords(np.uint64(seed & _MASK64), stream)


def to_unit(h: np.ndarray) -> np.ndarray:
    """Map 64-bit hashes to float64 uniforms in [0, 1) (top 53 bits)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def to_unit32(h: np.ndarray) -> np.ndarray:
    """Map 64-bit hashes to float32 uniforms in [0, 1) (top 24 bits, exact in float32)."""
    return (h >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def uniforms(key, n: int, *coords) -> np.ndarray:
    """`n` independent uniforms per coordinate tuple: shape broadcast(coords) + (n,)."""
    base = hash_coords(key, *coords)[..., None]
    # splitmix64's own sequence: consecutive multiples of the golden gamma.
    return to_unit(_mix(base + np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN))


def pixel_hashes(key, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """One 64-bit hash per pixel of the grid ys × xs (global integer coordinates)."""
    return hash_coords(key, np.asarray(ys)[:, None], np.asarray(xs)[None, :])


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def _axis(coords: np.ndarray, cell: float):
    f = coords / cell
    i = np.floor(f)
    w = _smoothstep(f - i).astype(np.float32)
    return i.astype(np.int64), w


def value_noise(key, ys: np.ndarray, xs: np.ndarray, cell: float) -> np.ndarray:
    """Smooth value noise in [0, 1) on the grid ys × xs; lattice spacing `cell` px.

    `ys` and `xs` are 1-D float64 global coordinates. Lattice values are hashed
    from their integer lattice coordinates, interpolated with smoothstep.
    """
    iy, wy = _axis(ys, cell)
    ix, wx = _axis(xs, cell)
    iy0, ix0 = int(iy[0]), int(ix[0])
    ny, nx = int(iy[-1]) - iy0 + 2, int(ix[-1]) - ix0 + 2
    lat = to_unit32(hash_coords(key, np.arange(iy0, iy0 + ny)[:, None], np.arange(ix0, ix0 + nx)))
    jx = ix - ix0
    r0 = lat[:, jx]
    rows = r0 + wx * (lat[:, jx + 1] - r0)
    # Per pixel: row(jy) + wy * (row(jy + 1) - row(jy)); the row difference is
    # formed once per lattice row, and full-size temporaries are kept to two.
    diff = rows[1:] - rows[:-1]
    jy = iy - iy0
    out = np.take(rows, jy, axis=0)
    tmp = np.take(diff, jy, axis=0)
    tmp *= wy[:, None]
    out += tmp
    return out


def value_noise_bounds(key, ys: np.ndarray, xs: np.ndarray, cell: float):
    """(min, max) that `value_noise` can take on the grid ys × xs.

    Smoothstep interpolation is a convex combination of the four surrounding
    lattice values, so the extremes of the lattice values covering the grid
    bound it, at the cost of hashing only those few lattice points.
    """
    iy0, iy1 = int(np.floor(ys[0] / cell)), int(np.floor(ys[-1] / cell)) + 2
    ix0, ix1 = int(np.floor(xs[0] / cell)), int(np.floor(xs[-1] / cell)) + 2
    lat = to_unit32(hash_coords(key, np.arange(iy0, iy1)[:, None], np.arange(ix0, ix1)))
    return float(lat.min()), float(lat.max())


def value_noise_at(key, y: np.ndarray, x: np.ndarray, cell: float) -> np.ndarray:
    """The same value noise at scattered points (float64, any broadcast shape)."""
    fy, fx = np.asarray(y, np.float64) / cell, np.asarray(x, np.float64) / cell
    iy, ix = np.floor(fy), np.floor(fx)
    wy, wx = _smoothstep(fy - iy), _smoothstep(fx - ix)
    iy, ix = iy.astype(np.int64), ix.astype(np.int64)
    lat = to_unit32(hash_coords(key, iy[..., None] + [0, 0, 1, 1], ix[..., None] + [0, 1, 0, 1]))
    lat = lat.astype(np.float64)
    top = lat[..., 0] + wx * (lat[..., 1] - lat[..., 0])
    bottom = lat[..., 2] + wx * (lat[..., 3] - lat[..., 2])
    return top + wy * (bottom - top)


class Octaves:
    """A fixed sum of value-noise octaves (fBm), normalised back to [0, 1).

    Octaves whose lattice is finer than `min_cell` px would only alias (and
    hashing their lattice would cost more than the pixels), so they are
    replaced by their mean, 0.5: coarse renderings stay band-limited.
    """

    def __init__(self, key, cells, weights, min_cell=1.5):
        total = float(sum(weights))
        self.terms, self.const = [], 0.0
        for i, (c, w) in enumerate(zip(cells, weights, strict=True)):
            if c >= min_cell:
                self.terms.append((hash_coords(key, i), float(c), np.float32(w / total)))
            else:
                self.const += 0.5 * w / total

    def __call__(self, ys, xs) -> np.ndarray:
        return self.evaluate(ys, xs)[0]

    def evaluate(self, ys, xs, decide=None):
        """(sum, None), or (decision, True) as soon as `decide` settles it.

        After each octave but the last, ``decide(partial, rest_lo, rest_hi)``
        sees the partial sum and the range the remaining octaves can add (each
        is in [0, 1), so [0, their weight)); if it returns an array, evaluation
        stops there. The partial sums are the same operations in the same order
        as the full sum.
        """
        out = None
        for k, (key, cell, wt) in enumerate(self.terms):
            n = value_noise(key, ys, xs, cell)
            n *= wt
            if out is None:
                out = n
            else:
                out += n
            if decide is not None and k + 1 < len(self.terms):
                rest = sum(float(w) for _, _, w in self.terms[k + 1 :])
                settled = decide(out, self.const, self.const + rest)
                if settled is not None:
                    return settled, True
        if out is None:
            return np.full((len(ys), len(xs)), self.const, np.float32), None
        if self.const:
            out += np.float32(self.const)
        return out, None

    def bounds(self, ys, xs):
        """(min, max) the sum can take on the grid ys × xs (see value_noise_bounds)."""
        lo = hi = self.const
        for key, cell, wt in self.terms:
            a, b = value_noise_bounds(key, ys, xs, cell)
            lo += a * float(wt)
            hi += b * float(wt)
        return lo, hi
