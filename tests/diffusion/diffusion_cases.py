"""Paths shared by the diffusion tests (a uniquely named module, not conftest)."""

from pathlib import Path

REF_DIR = Path(__file__).parents[1] / "data" / "stainfuser-reference"
REF_V2_DIR = Path(__file__).parents[1] / "data" / "stainfuser-reference-v2"
