"""jaxvae: the VAE of "A Gentle Introduction to Variational Autoencoders" in JAX/Flax.

The public API in one place; see the README for a tour.
"""
from jaxvae.binarize import fixed_binarization, sample_binary
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.evaluate import evaluate, evaluate_run_arrays
from jaxvae.losses import (
    bernoulli_log_likelihood,
    gauss_similarity_loss,
    gaussian_log_likelihood,
    iwae_bound,
    iwae_loss,
    log_importance_weights,
    log_normal_diag,
    log_standard_normal,
    objective_loss,
    sample_eps,
    unit_gauss_kl,
    vae_loss,
    vae_loss_from_key,
)
from jaxvae.models import VAE, ConvDecoder, ConvEncoder, Decoder, Encoder, decode, decoder_output, encode, init_params
from jaxvae.parallel import DataParallel, make_data_parallel
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
    "evaluate", "evaluate_run_arrays", "objective_loss", "iwae_loss", "iwae_bound", "log_importance_weights",
    "gaussian_log_likelihood", "bernoulli_log_likelihood", "log_normal_diag", "log_standard_normal",
    "decoder_output", "ConvEncoder", "ConvDecoder", "DataParallel", "make_data_parallel",
    "fixed_binarization", "sample_binary",
]
