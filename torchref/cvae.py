"""A conditional VAE (Sohn, Lee and Yan 2015) on the blog's modules: the one-hot label joins the
encoder's input and the decoder's latent; the prior stays N(0, I). Trained with the blog's losses."""

from __future__ import annotations

import torch
from torch import nn

from .models import (
    DiagGaussSample,
    SimpleGaussVAEFCDecoder,
    SimpleGaussVAEFCEncoder,
    blog_decoder_descriptors,
    blog_encoder_descriptors,
)

__all__ = ["build_blog_cvae", "cvae_forward"]


def build_blog_cvae(nof_features: int = 784, latent_dim: int = 2, num_classes: int = 10, hidden=(400,)):
    """``(encoder, distrib_sample, decoder)`` of the blog's model, widened by ``num_classes``: the encoder
    reads ``nof_features + num_classes`` inputs, the decoder ``latent_dim + num_classes`` latents."""
    prev, heads = blog_encoder_descriptors(nof_features + num_classes, latent_dim, hidden)
    encoder = SimpleGaussVAEFCEncoder(
        prev_layer_descriptors=prev, gaussparam_layer_descriptors=heads
    )
    distrib_sample = DiagGaussSample()
    decoder = SimpleGaussVAEFCDecoder(
        layer_descriptors=blog_decoder_descriptors(nof_features, latent_dim + num_classes, hidden)
    )
    return encoder, distrib_sample, decoder


def cvae_forward(encoder, distrib_sample, decoder, x, labels, num_classes: int, eps=None):
    """``(preds, gauss_params)`` for images ``x`` and integer ``labels``: encode [x, one-hot],
    sample z, decode [z, one-hot]."""
    y = nn.functional.one_hot(labels, num_classes).to(x.dtype)
    gauss_params = encoder(torch.cat([x, y], dim=-1))
    z = distrib_sample(gauss_params, eps)
    preds = decoder(torch.cat([z, y], dim=-1))
    return preds, gauss_params
