"""Neural style transfer (Gatys, Ecker & Bethge, CVPR 2016), the generator of SPI-2M.

The stylised image is optimised directly in pixel space, starting from the
source, to keep the source's VGG19 activations at the content layers and to
take on the target's Gram matrices (feature correlations) at the style
layers:

    loss = content_weight · Σ_l MSE(F_l(x), F_l(source))
         + style_weight   · Σ_l w_l · MSE(G_l(x), G_l(target)),
    G_l = F_l F_lᵀ / (C_l · H_l · W_l).

Defaults follow Gatys et al.: content at relu4_2, style at relu1_1 ... relu5_1
with equal weights, and a style/content ratio of 1e6 for this Gram
normalisation (the scale of PyTorch's reference tutorial). The optimiser is
Adam on the pixels, projected back to [0, 1] after every step; L-BFGS, as in
the original paper, is available too.

Every sample of a batch has its own loss terms and Adam works per pixel, so
with Adam a batch gives the same result as running its samples one by one
(L-BFGS couples them through its line search).
"""

from dataclasses import dataclass

import torch

from ..errors import ParameterError
from .vgg import LAYER_INDEX, VGG19


@dataclass(frozen=True)
class NSTConfig:
    content_layers: tuple[str, ...] = ("relu4_2",)
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    # One weight per style layer; None means equal weights of 1.
    style_layer_weights: tuple[float, ...] | None = None
    content_weight: float = 1.0
    style_weight: float = 1e6
    iterations: int = 300
    optimizer: str = "adam"  # "adam" or "lbfgs"
    lr: float = 0.01  # Adam step in [0, 1] pixel units; L-BFGS uses lr=1

    def validate(self) -> None:
        for name in (*self.content_layers, *self.style_layers):
            if name not in LAYER_INDEX:
                raise ParameterError(
                    f"NST layer {name!r} is not a VGG19 layer; use names like relu4_2, conv1_1"
                )
        if not self.style_layers:
            raise ParameterError("NST needs at least one style layer")
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(
            self.style_layers
        ):
            raise ParameterError(
                f"NST style_layer_weights has {len(self.style_layer_weights)} values for "
                f"{len(self.style_layers)} style layers"
            )
        if self.iterations < 1:
            raise ParameterError(f"NST iterations must be >= 1, got {self.iterations}")
        if self.optimizer not in ("adam", "lbfgs"):
            raise ParameterError(f"NST optimizer must be 'adam' or 'lbfgs', got {self.optimizer!r}")
        if self.lr <= 0:
            raise ParameterError(f"NST lr must be > 0, got {self.lr}")


def gram(f: torch.Tensor) -> torch.Tensor:
    """B×C×H×W activations -> B×C×C Gram matrices normalised by C·H·W."""
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def _per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).flatten(1).mean(1)


class StyleLoss:
    """The NST objective for fixed source and target images, per batch sample."""

    def __init__(self, vgg: VGG19, source: torch.Tensor, target: torch.Tensor, cfg: NSTConfig):
        self.vgg, self.cfg = vgg, cfg
        weights = cfg.style_layer_weights or (1.0,) * len(cfg.style_layers)
        self.style_weights = dict(zip(cfg.style_layers, weights, strict=True))
        with torch.no_grad():
            self.content_ref = vgg(source, cfg.content_layers)
            style_feats = vgg(target, cfg.style_layers)
            self.gram_ref = {k: gram(v) for k, v in style_feats.items()}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Loss of each sample of `x` (a B vector)."""
        cfg = self.cfg
        feats = self.vgg(x, set(cfg.content_layers) | set(cfg.style_layers))
        content = sum(_per_sample_mse(feats[k], self.content_ref[k]) for k in cfg.content_layers)
        style = sum(
            w * _per_sample_mse(gram(feats[k]), self.gram_ref[k])
            for k, w in self.style_weights.items()
        )
        return cfg.content_weight * content + cfg.style_weight * style


def style_transfer(
    source: torch.Tensor,
    target: torch.Tensor,
    vgg: VGG19,
    cfg: NSTConfig = NSTConfig(),
    callback=None,
) -> tuple[torch.Tensor, list[float]]:
    """Stylise `source` (B×3×H×W float in [0, 1]) with the style of `target`
    (B×3×h×w, or 1×3×h×w shared by the batch).

    Returns the stylised batch in [0, 1] and the total loss (summed over the
    batch) at every evaluation. `callback(i, loss)` is called after each one.
    """
    cfg.validate()
    if source.ndim != 4 or source.shape[1] != 3 or target.ndim != 4 or target.shape[1] != 3:
        raise ParameterError(
            f"NST needs B×3×H×W source and target, got {tuple(source.shape)} and "
            f"{tuple(target.shape)}"
        )
    if target.shape[0] == 1 and source.shape[0] > 1:
        target = target.expand(source.shape[0], -1, -1, -1)
    if target.shape[0] != source.shape[0]:
        raise ParameterError(f"NST got {source.shape[0]} sources but {target.shape[0]} targets")
    loss_fn = StyleLoss(vgg, source, target, cfg)
    x = source.detach().clone().requires_grad_(True)
    history: list[float] = []

    def evaluate() -> torch.Tensor:
        loss = loss_fn(x).sum()
        history.append(float(loss.detach()))
        if callback is not None:
            callback(len(history), history[-1])
        return loss

    if cfg.optimizer == "adam":
        opt = torch.optim.Adam([x], lr=cfg.lr)
        for _ in range(cfg.iterations):
            opt.zero_grad(set_to_none=True)
            evaluate().backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
    else:
        # L-BFGS keeps a curvature history, so clamping happens between its runs
        # of up to 20 iterations rather than after every evaluation; the budget
        # is therefore rounded up to whole runs.
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=20, line_search_fn="strong_wolfe")

        def closure():
            x.grad = None
            loss = evaluate()
            loss.backward()
            return loss

        while len(history) < cfg.iterations:
            before = len(history)
            opt.step(closure)
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
            if len(history) == before + 1:  # converged: nothing left to improve
                break
    return x.detach(), history
