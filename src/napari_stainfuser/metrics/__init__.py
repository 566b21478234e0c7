"""Image-quality metrics against a reference."""

from .image import image_metrics, mean_delta_e2000, psnr, ssim

__all__ = ["image_metrics", "mean_delta_e2000", "psnr", "ssim"]
