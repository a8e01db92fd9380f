"""torchref: the PyTorch VAE of the blog post, kept as close to the blog as it can be.

Mirrors "A Gentle Introduction to Variational Autoencoders" (names, formulas, loops); jaxvae's
parity tests compare against it on shared weights and shared noise.
"""

from .cvae import build_blog_cvae, cvae_forward
from .data import AutoencoderDataset, load_mnist, load_mnist_idx, read_idx, to_float_features
from .layers import VGGStackedLinear, resolve_linear_descriptors
from .losses import (
    GaussSimilarityLoss,
    UnitGaussKullbackLeiblerDivergenceLoss,
    unitgauss_kullback_leibler_divergence,
)
from .models import (
    DiagGaussSample,
    SimpleGaussVAEFCDecoder,
    SimpleGaussVAEFCEncoder,
    blog_decoder_descriptors,
    blog_encoder_descriptors,
    build_blog_model,
    build_blog_vae,
)

# Imported lazily so that `python -m torchref.train` does not find torchref.train already
# imported by the package (runpy warns about that).
_TRAIN_NAMES = ("train_one_epoch", "validate_one_epoch", "train_blog")


def __getattr__(name):
    if name in _TRAIN_NAMES:
        from . import train as _train

        return getattr(_train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "VGGStackedLinear",
    "resolve_linear_descriptors",
    "SimpleGaussVAEFCEncoder",
    "DiagGaussSample",
    "SimpleGaussVAEFCDecoder",
    "blog_encoder_descriptors",
    "blog_decoder_descriptors",
    "build_blog_model",
    "build_blog_vae",
    "build_blog_cvae",
    "cvae_forward",
    "GaussSimilarityLoss",
    "unitgauss_kullback_leibler_divergence",
    "UnitGaussKullbackLeiblerDivergenceLoss",
    "train_one_epoch",
    "validate_one_epoch",
    "train_blog",
    "AutoencoderDataset",
    "to_float_features",
    "read_idx",
    "load_mnist_idx",
    "load_mnist",
]
