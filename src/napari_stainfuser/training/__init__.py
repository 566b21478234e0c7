"""Training StainFuser and making its training data.

- :mod:`.pairs` (``stainfuser make-pairs``): (source, target, stylised) triplets
  by physics-based re-staining (:mod:`.restain`) or neural style transfer
  (:mod:`.nst` on a plain-torch VGG19, :mod:`.vgg`), with targets chosen by
  k-means (:mod:`.targets`, :mod:`.kmeans`) from tile folders or slides
  (:mod:`.tiles`).
- :mod:`.trainer` (``stainfuser train stainfuser``): the fine-tuning loop with
  the published recipe (:mod:`.recipe`) on a triplet set (:mod:`.triplets`),
  with CSV loss log, periodic checkpoints and exact resume.
"""

from importlib import import_module

# Submodules load on first use: torch and diffusers stay out of `import napari_stainfuser.training`.
_LAZY = {
    "TrainConfig": ".trainer",
    "train": ".trainer",
    "latest_checkpoint": ".trainer",
    "read_loss_log": ".trainer",
    "PairsConfig": ".pairs",
    "PairsResult": ".pairs",
    "make_pairs": ".pairs",
    "NSTConfig": ".nst",
    "style_transfer": ".nst",
    "VGG19": ".vgg",
    "load_vgg19": ".vgg",
    "find_vgg19_weights": ".vgg",
    "PhysicsRestainer": ".restain",
    "NSTRestainer": ".restain",
    "kmeans": ".kmeans",
    "pick_representatives": ".kmeans",
    "pick_targets": ".targets",
    "colour_features": ".targets",
    "TripletDataset": ".triplets",
    "find_triplets": ".triplets",
    "set_trainable": ".recipe",
    "is_trained": ".recipe",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
