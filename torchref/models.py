"""Encoder, latent sampler and decoder of the blog's fully-connected Gaussian VAE."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .layers import VGGStackedLinear

__all__ = [
    "SimpleGaussVAEFCEncoder",
    "DiagGaussSample",
    "SimpleGaussVAEFCDecoder",
    "blog_encoder_descriptors",
    "blog_decoder_descriptors",
    "build_blog_model",
    "build_blog_vae",
]


def _last_linear(network: nn.Sequential) -> nn.Linear | None:
    for module in reversed(list(network)):
        if isinstance(module, nn.Linear):
            return module
    return None


class SimpleGaussVAEFCEncoder(nn.Module):
    """Maps x to the parameters ``(mu, sigma)`` of a diagonal Gaussian in latent space.

    ``prev_network`` is a shared trunk; ``gauss_mu_network`` and ``gauss_logsigma_network`` are
    two heads built from the same descriptors (separate weights); ``sigma = exp(logsigma)``.
    If the first head descriptor has no ``in_features`` it is taken from the trunk's last
    ``nn.Linear``. The blog writes that value into the caller's dict; here a copy is made
    instead, so the caller's descriptors are unchanged (the built modules are identical).
    """

    def __init__(
        self,
        prev_layer_descriptors: Sequence[Mapping[str, Any]] | None = None,
        gaussparam_layer_descriptors: Sequence[Mapping[str, Any]] | None = None,
    ):
        super().__init__()
        prev = list(prev_layer_descriptors or [])
        heads = [dict(d) for d in (gaussparam_layer_descriptors or [])]
        if not heads:
            raise ValueError("gaussparam_layer_descriptors must hold at least one descriptor")
        self.prev_network = VGGStackedLinear(prev)
        if "in_features" not in heads[0]:
            last = _last_linear(self.prev_network.network)
            if last is None:
                raise ValueError(
                    "gaussparam layer descriptor 0: missing 'in_features' and prev_network "
                    "has no nn.Linear to infer it from"
                )
            heads[0]["in_features"] = last.weight.size(0)
        self.gauss_mu_network = VGGStackedLinear(heads)
        self.gauss_logsigma_network = VGGStackedLinear(heads)

    def forward(self, x):
        prev_y = self.prev_network(x)
        mu = self.gauss_mu_network(prev_y)
        sigma = torch.exp(self.gauss_logsigma_network(prev_y))
        return mu, sigma


class DiagGaussSample(nn.Module):
    """Reparameterised draw ``z = mu + sigma * eps`` from a diagonal Gaussian.

    ``eps`` may be given (how tests share noise with jaxvae); otherwise it is standard normal
    noise of sigma's shape from torch's global RNG, on sigma's device and dtype. On CPU float32
    this yields the very numbers the blog's ``Normal(0, 1).sample(...)`` draws for a given seed.
    """

    def forward(self, gauss_params, eps=None):
        mu, sigma = gauss_params
        if eps is None:
            eps = torch.randn(sigma.shape, dtype=sigma.dtype, device=sigma.device)
        else:
            eps = torch.as_tensor(eps)
            if eps.shape != sigma.shape:
                raise ValueError(
                    f"eps has shape {tuple(eps.shape)} but sigma has shape {tuple(sigma.shape)}"
                )
            # Cast to sigma's dtype so float64 numpy noise still feeds a float32 model.
            eps = eps.to(device=sigma.device, dtype=sigma.dtype)
        return mu + sigma * eps


class SimpleGaussVAEFCDecoder(nn.Module):
    """Maps latent codes z back to data space: ``network(z)`` (a ``VGGStackedLinear``)."""

    def __init__(self, layer_descriptors: Sequence[Mapping[str, Any]] | None = None):
        super().__init__()
        self.network = VGGStackedLinear(list(layer_descriptors or []))

    def forward(self, x):
        return self.network(x)


def _hidden_tuple(hidden) -> tuple[int, ...]:
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    if not hidden:
        raise ValueError("hidden must name at least one layer size")
    return hidden


def blog_encoder_descriptors(
    nof_features: int = 784, latent_dim: int = 2, hidden=(400,)
) -> tuple[list[dict], list[dict]]:
    """The blog's encoder descriptors ``(prev, gaussparam)``; ``hidden`` sizes the trunk.

    ``hidden=(400,)`` is the blog: Linear(nof_features, 400) + LeakyReLU, then two
    Linear(400, latent_dim) heads without activation. Longer tuples add LeakyReLU layers.
    """
    hidden = _hidden_tuple(hidden)
    prev = [
        {"nof_layers": 1, "in_features": nof_features, "out_features": hidden[0],
         "activation": nn.LeakyReLU}
    ]
    prev += [{"nof_layers": 1, "out_features": h, "activation": nn.LeakyReLU} for h in hidden[1:]]
    heads = [{"nof_layers": 1, "out_features": latent_dim, "activation": None}]
    return prev, heads


def blog_decoder_descriptors(
    nof_features: int = 784, latent_dim: int = 2, hidden=(400,)
) -> list[dict]:
    """The blog's decoder descriptors; ``hidden`` is given encoder-side and mirrored here.

    ``hidden=(400,)`` is the blog: Linear(latent_dim, 400) + LeakyReLU, Linear(400, nof_features)
    + Sigmoid. For ``hidden=(512, 256)`` the decoder runs latent -> 256 -> 512 -> nof_features.
    """
    rev = tuple(reversed(_hidden_tuple(hidden)))
    desc = [
        {"nof_layers": 1, "in_features": latent_dim, "out_features": rev[0],
         "activation": nn.LeakyReLU}
    ]
    desc += [{"nof_layers": 1, "out_features": h, "activation": nn.LeakyReLU} for h in rev[1:]]
    desc.append({"nof_layers": 1, "out_features": nof_features, "activation": nn.Sigmoid})
    return desc


def build_blog_model(nof_features: int = 784, latent_dim: int = 2, hidden=(400,)):
    """Build ``(encoder, distrib_sample, decoder)`` exactly as the blog does (default init)."""
    prev, heads = blog_encoder_descriptors(nof_features, latent_dim, hidden)
    encoder = SimpleGaussVAEFCEncoder(
        prev_layer_descriptors=prev, gaussparam_layer_descriptors=heads
    )
    distrib_sample = DiagGaussSample()
    decoder = SimpleGaussVAEFCDecoder(
        layer_descriptors=blog_decoder_descriptors(nof_features, latent_dim, hidden)
    )
    return encoder, distrib_sample, decoder


build_blog_vae = build_blog_model
