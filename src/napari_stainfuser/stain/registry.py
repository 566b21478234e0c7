"""Normalizers by name, and loading stain presets."""

from ..errors import ParameterError
from .base import StainNormalizer
from .macenko import MacenkoNormalizer
from .reinhard import ReinhardNormalizer
from .ruifrok import RuifrokNormalizer
from .vahadane import VahadaneNormalizer

NORMALIZERS: dict[str, type[StainNormalizer]] = {
    cls.name: cls
    for cls in (MacenkoNormalizer, ReinhardNormalizer, RuifrokNormalizer, VahadaneNormalizer)
}


def _method_class(name) -> type[StainNormalizer]:
    key = str(name).strip().lower()
    if key not in NORMALIZERS:
        raise ParameterError(f"method {name!r} is unknown; valid: {', '.join(sorted(NORMALIZERS))}")
    return NORMALIZERS[key]


def valid_params(cls: type[StainNormalizer]) -> list[str]:
    return cls.parameter_names()


def get_normalizer(name: str, **params) -> StainNormalizer:
    """A new, unfitted normalizer: 'macenko', 'reinhard', 'ruifrok' or 'vahadane'."""
    cls = _method_class(name)
    valid = cls.parameter_names()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ParameterError(
            f"{cls.name}: unknown parameter {unknown[0]!r}; valid: {', '.join(valid)}"
        )
    return cls(**params)


def load_normalizer(path, method: str | None = None, **params) -> StainNormalizer:
    """A normalizer fitted from a JSON stain preset written by ``save``.

    method: if given, the preset must be for this method.
    params: override the preset's parameters (e.g. device, tile_size).
    """
    cls = StainNormalizer if method is None else _method_class(method)
    return cls.load(path, **params)


load = load_normalizer
