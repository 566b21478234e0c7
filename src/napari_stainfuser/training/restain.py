"""The two stylised-image generators of ``stainfuser make-pairs``.

Physics-based re-staining (the default, no weights needed): the source is
deconvolved with its own estimated stain matrix, each stain's concentrations
are rescaled so their robust maximum (99th percentile over tissue) matches the
target's, and the result is re-rendered by Beer–Lambert with the target's
stain matrix. This is the colour-deconvolution model of the classical
normalizers, so it reuses their estimation and rendering code
(:mod:`napari_stainfuser.stain`): Macenko's stain vectors by default,
Vahadane's on request. Each source tile gets its own estimate (the point of
a pair set is per-tile variety); a tile whose stains cannot be estimated
(glass, a single colour) is reported and skipped, never silently passed
through.

Neural style transfer (as in the paper's SPI-2M): see :mod:`.nst`.
"""

import numpy as np
import torch

from ..errors import ParameterError, StainEstimationError
from .nst import NSTConfig, style_transfer
from .vgg import load_vgg19

PHYSICS_METHODS = ("macenko", "vahadane")


class PhysicsRestainer:
    """Re-stain tiles with the stain matrix and concentration statistics of targets."""

    kind = "physics"

    def __init__(self, stain_method: str = "macenko", **params):
        if stain_method not in PHYSICS_METHODS:
            raise ParameterError(
                f"stain method {stain_method!r} cannot re-stain; valid: {', '.join(PHYSICS_METHODS)}"
            )
        self.stain_method = stain_method
        self.params = params
        self._fitted: dict[str, object] = {}

    def _normalizer(self, target: np.ndarray, target_name: str):
        from ..stain import get_normalizer

        if target_name not in self._fitted:
            # lut=False: each (source, target) pair is used once, a 256³ table would not pay off.
            norm = get_normalizer(self.stain_method, lut=False, **self.params)
            norm.fit(target, name=target_name)
            self._fitted[target_name] = norm
        return self._fitted[target_name]

    def restain(self, source: np.ndarray, target: np.ndarray, source_name: str, target_name: str):
        """The stylised H×W×3 uint8 tile; StainEstimationError if either image
        has no estimable stains."""
        norm = self._normalizer(target, target_name)
        norm.fit_source(source, name=source_name)
        try:
            return norm.transform(source)
        finally:
            norm.reset_source()

    def __call__(self, sources, targets, source_names, target_names) -> list:
        """Stylise each source with its target; a failed pair gives its exception."""
        out = []
        for s, t, sn, tn in zip(sources, targets, source_names, target_names, strict=True):
            try:
                out.append(self.restain(s, t, sn, tn))
            except StainEstimationError as exc:
                out.append(exc)
        return out


def _to_unit(images: list[np.ndarray], device) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return x.to(device=device, dtype=torch.float32) / 255.0


class NSTRestainer:
    """Neural style transfer with VGG19 weights from a user-supplied file."""

    kind = "nst"

    def __init__(
        self, vgg_weights=None, config: NSTConfig | None = None, device="cpu", pool: str = "max"
    ):
        from ..devices import resolve_device  # refuses CUDA on a machine without it

        self.config = config or NSTConfig()
        self.config.validate()
        self.device = resolve_device(device)
        self.vgg = load_vgg19(vgg_weights, pool=pool, device=self.device)

    def __call__(self, sources, targets, source_names, target_names) -> list:
        """Stylise a batch; sources must share one size, and targets one size."""
        if len({s.shape for s in sources}) > 1 or len({t.shape for t in targets}) > 1:
            # Different sizes cannot share a batch; do them one by one.
            return [
                self([s], [t], [sn], [tn])[0]
                for s, t, sn, tn in zip(sources, targets, source_names, target_names, strict=True)
            ]
        stylised, _ = style_transfer(
            _to_unit(sources, self.device), _to_unit(targets, self.device), self.vgg, self.config
        )
        u8 = (stylised * 255.0).round().clamp(0, 255).to(torch.uint8)
        return list(u8.permute(0, 2, 3, 1).cpu().numpy())
