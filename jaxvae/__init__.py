"""jaxvae: the VAE of "A Gentle Introduction to Variational Autoencoders" in JAX/Flax.

The top level holds what most users need; the rest lives in submodules (``jaxvae.losses``,
``jaxvae.schedules``, ``jaxvae.data``, ``jaxvae.checkpoint``, ``jaxvae.runs``, ``jaxvae.interop``,
``jaxvae.plots``, ``jaxvae.parallel``, ``jaxvae.binarize``). Argument order everywhere: arrays and
state first, then the PRNG key, then the config. See the README for a tour.
"""
from jaxvae import schedules
from jaxvae.config import TrainConfig, VAEConfig
from jaxvae.evaluate import evaluate, evaluate_run
from jaxvae.losses import objective_loss, sample_eps, vae_loss
from jaxvae.models import VAE, bind, decode, encode, init_params, params_of
from jaxvae.training import (
    FitResult,
    FitState,
    NonFiniteError,
    ScheduleStates,
    TrainState,
    TrainStep,
    eval_epoch,
    fit,
    init_fit_state,
    train_epoch,
)

__version__ = "0.2.0"

__all__ = [
    "VAEConfig", "TrainConfig",
    "VAE", "init_params", "params_of", "bind", "encode", "decode",
    "vae_loss", "objective_loss", "sample_eps",
    "schedules", "TrainStep", "TrainState", "ScheduleStates", "train_epoch", "eval_epoch",
    "fit", "FitResult", "FitState", "NonFiniteError", "init_fit_state",
    "evaluate", "evaluate_run",
]
