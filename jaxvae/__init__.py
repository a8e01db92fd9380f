"""jaxvae: the VAE of "A Gentle Introduction to Variational Autoencoders" in JAX/Flax.

The public API in one place; see the README for a tour.
"""
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.losses import gauss_similarity_loss, sample_eps, unit_gauss_kl, vae_loss, vae_loss_from_key
from jaxvae.models import VAE, Decoder, Encoder, decode, encode, init_params
from jaxvae.training import (
    FitResult,
    FitState,
    NonFiniteError,
    TrainState,
    create_train_state,
    eval_epoch,
    fit,
    init_fit_state,
    train_epoch,
    train_step,
    train_step_with_noise,
)

__version__ = "0.1.0"

__all__ = [
    "VAEConfig", "TrainConfig", "VAE", "Encoder", "Decoder", "init_params", "encode", "decode",
    "vae_loss", "vae_loss_from_key", "sample_eps", "gauss_similarity_loss", "unit_gauss_kl",
    "fit", "FitResult", "FitState", "NonFiniteError", "TrainState", "create_train_state", "init_fit_state",
    "train_epoch", "eval_epoch", "train_step", "train_step_with_noise",
]
