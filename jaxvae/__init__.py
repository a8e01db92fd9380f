"""jaxvae: the VAE of "A Gentle Introduction to Variational Autoencoders" in JAX/Flax.

The top level holds what most users need; the rest lives in submodules (``jaxvae.model``, the model
protocol; ``jaxvae.vae``, ``jaxvae.cvae``, ``jaxvae.vqvae`` and ``jaxvae.betatc``, its VAE family; ``jaxvae.losses``, ``jaxvae.schedules``,
``jaxvae.sweep``, ``jaxvae.data``, ``jaxvae.checkpoint``, ``jaxvae.runs``, ``jaxvae.interop``,
``jaxvae.plots``, ``jaxvae.parallel``, ``jaxvae.binarize``, ``jaxvae.errors``). Argument order
everywhere: arrays and state first, then the PRNG key, then the config. See the README for a tour.

Names are imported on first use, so that ``import jaxvae`` (and ``jaxvae --help``) does not load JAX.
"""
from __future__ import annotations

import importlib

__version__ = "0.3.0"

# public name -> the module that defines it
_EXPORTS = {
    "VAEConfig": "jaxvae.config", "TrainConfig": "jaxvae.config",
    "Model": "jaxvae.model", "VAEModel": "jaxvae.vae", "ConditionalVAEModel": "jaxvae.cvae",
    "VQVAEModel": "jaxvae.vqvae", "BetaTCVAEModel": "jaxvae.betatc",
    "Hyper": "jaxvae.hyper", "Hyperparameter": "jaxvae.hyper",
    "VAE": "jaxvae.models", "init_params": "jaxvae.models", "params_of": "jaxvae.models", "bind": "jaxvae.models",
    "encode": "jaxvae.models", "decode": "jaxvae.models",
    "vae_loss": "jaxvae.losses", "objective_loss": "jaxvae.losses", "sample_eps": "jaxvae.losses",
    **{name: "jaxvae.training" for name in (
        "TrainStep", "TrainState", "ScheduleStates", "train_epoch", "eval_epoch", "fit", "FitResult",
        "FitState", "NonFiniteError", "init_fit_state", "print_epoch", "fit_models", "ModelsState", "ModelsResult")},
    "evaluate": "jaxvae.evaluation", "evaluate_run": "jaxvae.evaluation",
}
_SUBMODULES = ("schedules", "sweep")

__all__ = [*_EXPORTS, *_SUBMODULES]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"jaxvae.{name}")
    else:
        raise AttributeError(f"module 'jaxvae' has no attribute {name!r}")
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__():
    return sorted([*globals(), *__all__])
