"""Provenance: how an output slide was made, stored in the file and read back.

A provenance record is a JSON object: the software and its version, the method
and its parameters, the target (its kind, name and digest), the weights (name and
digest), the seed, sampler and steps, and the input slide's identity with its
µm/px and magnification. OME-Zarr keeps it in the root group's attributes under
:data:`ATTRS_KEY`; OME-TIFF in an OME-XML ``MapAnnotation`` of namespace
:data:`NAMESPACE` with one key, ``provenance``, whose value is the JSON text.

A record that cannot be parsed is ignored with a warning: the pixels are still
read.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET

log = logging.getLogger(__name__)

ATTRS_KEY = "napari_stainfuser_provenance"
NAMESPACE = "napari-stainfuser.org/provenance"


def software() -> dict:
    """The software that wrote the file."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("napari-stainfuser")
    except PackageNotFoundError:
        v = "unknown"
    return {"name": "napari-stainfuser", "version": v}


def ome_annotation(provenance: dict) -> dict:
    """tifffile OME metadata that stores ``provenance``."""
    text = json.dumps(provenance, sort_keys=True, ensure_ascii=False)
    return {"MapAnnotation": {"Namespace": NAMESPACE, "provenance": text}}


def _parsed(text, where: str) -> dict | None:
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError as exc:
        log.warning("%s: its provenance record is not valid JSON (%s); ignored", where, exc)
        return None
    if not isinstance(value, dict):
        log.warning("%s: its provenance record is not a JSON object; ignored", where)
        return None
    return value


def from_ome_xml(xml: str | None, where: str = "slide") -> dict | None:
    """The provenance record in an OME-XML document, or None."""
    if not xml or NAMESPACE not in xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        log.warning("%s: its OME-XML cannot be parsed (%s); provenance ignored", where, exc)
        return None
    for el in root.iter():
        if el.tag.endswith("MapAnnotation") and el.get("Namespace") == NAMESPACE:
            for m in el.iter():
                if m.tag.rpartition("}")[2] == "M" and m.get("K") == "provenance":
                    return _parsed(m.text or "", where)
    log.warning("%s: its provenance annotation has no 'provenance' entry; ignored", where)
    return None


def from_attrs(attrs, where: str = "slide") -> dict | None:
    """The provenance record in zarr attributes, or None."""
    try:
        value = attrs.get(ATTRS_KEY)
    except Exception as exc:  # a damaged attribute file
        log.warning("%s: its attributes cannot be read (%s); provenance ignored", where, exc)
        return None
    return None if value is None else _parsed(value, where)


def input_magnification(provenance: dict | None) -> float | None:
    """The input slide's objective magnification recorded in ``provenance``."""
    try:
        mag = float((provenance or {}).get("input", {}).get("magnification"))
    except (TypeError, ValueError, AttributeError):
        return None
    return mag if mag > 0 else None
