"""Inputs that users meet in practice and that once cost them work, for the bad-input tests."""

import hashlib
import struct
from pathlib import Path


def digest(path: Path) -> str:
    """A digest of a file or of every file under a folder (to prove nothing changed)."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def sparse_tiff(path: Path, height: int, width: int, tile: int = 256) -> Path:
    """A classic TIFF whose header claims height × width RGB px of tiles that were never
    written (offset and byte count 0), as a scanner leaves unscanned regions: a few MB
    on disk for any size."""
    n = -(-height // tile) * -(-width // tile)
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value or offset
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, None),  # BitsPerSample 8, 8, 8
        (259, 3, 1, 1),  # no compression
        (262, 3, 1, 2),  # RGB
        (277, 3, 1, 3),
        (284, 3, 1, 1),  # contiguous samples
        (322, 4, 1, tile),
        (323, 4, 1, tile),
        (324, 4, n, None),  # TileOffsets: all 0
        (325, 4, n, None),  # TileByteCounts: all 0
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    bits_at = ifd_offset + ifd_size
    offsets_at = bits_at + 6
    counts_at = offsets_at + 4 * n
    with open(path, "wb") as f:
        f.write(b"II*\x00" + struct.pack("<I", ifd_offset))
        f.write(struct.pack("<H", len(entries)))
        for tag, typ, count, value in entries:
            if value is None:
                value = {258: bits_at, 324: offsets_at, 325: counts_at}[tag]
                f.write(struct.pack("<HHII", tag, typ, count, value))
            elif typ == 3:
                f.write(struct.pack("<HHIHH", tag, typ, count, value, 0))
            else:
                f.write(struct.pack("<HHII", tag, typ, count, value))
        f.write(struct.pack("<I", 0))
        f.write(struct.pack("<HHH", 8, 8, 8))
        f.write(bytes(8 * n))  # tile offsets and byte counts, all zero
    return path
