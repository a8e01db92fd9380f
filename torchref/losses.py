"""The blog's losses: Gaussian reconstruction loss and KL divergence to N(0, I)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "GaussSimilarityLoss",
    "unitgauss_kullback_leibler_divergence",
    "UnitGaussKullbackLeiblerDivergenceLoss",
]


class GaussSimilarityLoss(nn.Module):
    """Batch mean of ``sum((x - x_hat)**2) / (2 * gauss_sigma**2)`` over flattened features.

    Symmetric in its two arguments (the blog calls it as ``loss(preds, targets)``).
    ``gauss_sigma`` is kept as a buffer, as in the blog.
    """

    def __init__(self, gauss_sigma: float = 1.0):
        if not gauss_sigma > 0:
            raise ValueError(f"gauss_sigma must be > 0, got {gauss_sigma!r}")
        super().__init__()
        self.register_buffer("gauss_sigma", torch.tensor(gauss_sigma))

    def forward(self, x, x_hat):
        x = torch.flatten(x, start_dim=1)
        x_hat = torch.flatten(x_hat, start_dim=1)
        # Same operation order as the blog so float32 results match it bit for bit.
        per_sample = 1 / (2 * (self.gauss_sigma**2)) * torch.sum((x - x_hat) ** 2, dim=-1)
        return torch.mean(per_sample)


def unitgauss_kullback_leibler_divergence(gauss_paras):
    """Per-sample ``KL(N(mu, diag sigma^2) || N(0, I))`` over the last dim.

    Written as the blog writes it, ``0.5 * sum(sigma**2 + mu**2 - 1 - 2*log(sigma))``; this form
    loses precision or overflows for extreme log-sigma (jaxvae has a stable variant).
    """
    mu, sigma = gauss_paras
    return 0.5 * torch.sum(sigma**2 + mu**2 - 1 - 2 * torch.log(sigma), dim=-1)


class UnitGaussKullbackLeiblerDivergenceLoss(nn.Module):
    """Batch mean of :func:`unitgauss_kullback_leibler_divergence`."""

    def forward(self, gauss_params):
        return torch.mean(unitgauss_kullback_leibler_divergence(gauss_params))
