"""Plain, frozen configuration dataclasses, validated on construction.

The defaults are the blog's: a 784-400-2 Gaussian VAE with LeakyReLU(0.01), a sigmoid output,
reconstruction sigma 1, KL weight 1, trained with Adam 1e-3 at batch 128 under ReduceLROnPlateau.
VAEConfig is hashable: it is the static description of the model inside compiled code. TrainConfig
never enters compiled code; ``jaxvae.schedules.lr_from_config`` and ``kl_from_config`` turn its schedule
fields into values.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from jaxvae.errors import InputError

ACTIVATIONS = ("leaky_relu", "relu", "tanh", "sigmoid", "elu", "gelu", "softplus", "identity")
OUTPUT_ACTIVATIONS = ("sigmoid", "identity")
LIKELIHOODS = ("gaussian", "bernoulli")
OBJECTIVES = ("elbo", "iwae")
ARCHITECTURES = ("mlp", "conv")
COMPUTE_DTYPES = ("float32", "bfloat16")
BINARIZATIONS = ("none", "dynamic", "fixed")
INITS = ("torch", "flax")
LR_SCHEDULES = ("plateau", "constant", "burda", "cosine")


# JAX sizes arrays and counts loop steps in 32-bit integers: a width, a batch, k or an epoch count past
# this overflows deep inside it, with a message that names none of jaxvae's fields.
INT32_MAX = 2**31 - 1


def _check_count(name: str, value, minimum: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be {what}, got {value!r}")
    if value > INT32_MAX:
        raise InputError(f"{name} must be at most {INT32_MAX} (JAX's sizes and counts are 32-bit integers), "
                         f"got {value}")


def check_positive_int(name: str, value: int) -> None:
    """InputError naming ``name`` unless ``value`` is an int in [1, ``INT32_MAX``] (not a bool).

    Args:
        name: The field's name, for the message.
        value: The value to check.

    Raises:
        InputError: ``value`` is not such an int.
    """
    _check_count(name, value, 1, "a positive integer")


def check_non_negative_int(name: str, value: int) -> None:
    """InputError naming ``name`` unless ``value`` is an int in [0, ``INT32_MAX``] (not a bool).

    Args:
        name: The field's name, for the message.
        value: The value to check.

    Raises:
        InputError: ``value`` is not such an int.
    """
    _check_count(name, value, 0, "an integer >= 0")


def _positive_ints(name: str, value, non_empty: bool = False) -> None:
    if not isinstance(value, tuple) or (non_empty and not value):
        kind = "a non-empty tuple" if non_empty else "a tuple"
        raise InputError(f"{name} must be {kind} of positive integers, got {value!r}")
    for width in value:
        check_positive_int(f"{name} entries", width)


def _finite_number(name: str, value, positive: bool) -> None:
    number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not number or value < 0 or (positive and value == 0):
        raise InputError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value!r}")


# Adam's epsilon keeps its division by sqrt(v) finite; 1e-8 by default, 1 the largest in common use
# (Inception's). Past that it, not sqrt(v), sets the step: lr * m / eps, which vanishes as eps grows.
ADAM_EPS_MAX = 1.0

# jax.random.PRNGKey takes a signed 64-bit seed; a larger integer overflows deep inside jax.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


def check_seed(name: str, value: int, headroom: int = 0) -> None:
    """InputError naming ``name`` unless ``value`` is an integer that ``jax.random.PRNGKey`` takes, even
    after adding up to ``headroom`` (validation data are binarised from ``binarize_seed + 1``).

    Args:
        name: The field's name, for the message.
        value: The seed.
        headroom: How much may be added to the seed.

    Raises:
        InputError: ``value`` is not an int, or not a 64-bit seed with that headroom.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if not SEED_MIN <= value <= SEED_MAX - headroom:
        raise InputError(f"{name} must be an integer in [{SEED_MIN}, {SEED_MAX - headroom}] (a 64-bit PRNG seed), "
                         f"got {value}")


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise InputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def is_custom_init(init) -> bool:
    """Whether ``VAEConfig.init`` is a (kernel_init, bias_init) pair rather than a named choice.

    Args:
        init: A ``VAEConfig.init`` value.

    Returns:
        True for a pair.
    """
    return isinstance(init, tuple)


def _check_init(value) -> None:
    if is_custom_init(value):
        if len(value) != 2 or not all(callable(f) for f in value):
            raise InputError(f"init as a pair must be (kernel_init, bias_init), two initializers called as "
                             f"init(key, shape, dtype); got {value!r}")
    elif value not in INITS:
        raise InputError(f"init must be one of {', '.join(INITS)} or a (kernel_init, bias_init) pair; got {value!r}")


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter a model's loss reads: its name, default and valid range.

    Attributes:
        name: The name: a ``Hyper`` key, a ``TrainConfig`` field or ``TrainConfig.hyper`` key, and the
            command line's flag (``--kl-weight`` for ``kl_weight``).
        default: The value when none is given.
        help: One line for ``--help`` and the docs.
        low: The smallest valid value (excluded when ``low_open``).
        low_open: True: values must be above ``low``; False: at least ``low``.
        high: The largest valid value (included); infinite for none.
        short: The name in a sweep's model names and labels (``sigma0.5_seed1``); empty for ``name``.
    """

    name: str
    default: float
    help: str
    low: float = 0.0
    low_open: bool = False
    high: float = math.inf
    short: str = ""

    @property
    def label(self) -> str:
        """The name in a sweep's model names and labels: ``short``, else ``name``."""
        return self.short or self.name

    @property
    def flag(self) -> str:
        """The command line's flag: ``--`` and the name with dashes."""
        return "--" + self.name.replace("_", "-")

    @property
    def valid(self) -> str:
        """The valid range in words, e.g. ``"> 0"`` or ``"in [0, 1]"``."""
        if math.isinf(self.high):
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def check(self, value, where: str = "") -> float:
        """``value`` as a float, or InputError naming the hyperparameter, the value and its range.

        Args:
            value: The value to check.
            where: Where it was given (``"TrainConfig.hyper"``, say), for the message.

        Returns:
            The value as a Python float.

        Raises:
            InputError: Not a finite real number in the valid range.
        """
        label = f"{where}{'.' if where else ''}{self.name}"
        number = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
        if not number or (value <= self.low if self.low_open else value < self.low) or value > self.high:
            raise InputError(f"{label} must be a finite number {self.valid}, got {value!r}")
        return float(value)


#: Adam's learning rate (before its schedule's factor); every model has it.
LR = Hyperparameter("lr", 1e-3, "the learning rate (before its schedule's factor)", low_open=True)
#: The KL term's weight (before its schedule's factor): the blog's ``distrib_loss_rate``, a beta-VAE's beta.
KL_WEIGHT = Hyperparameter("kl_weight", 1.0, "the KL term's weight: the blog's distrib_loss_rate, a beta-VAE's beta",
                           short="kl")
#: The Gaussian likelihood's sigma (the blog's ``gauss_sigma``).
RECON_SIGMA = Hyperparameter("recon_sigma", 1.0, "the Gaussian likelihood's sigma (the blog's gauss_sigma)",
                             low_open=True, short="sigma")
#: Every hyperparameter a model of the blog's family (``jaxvae.vae.VAEModel``) may read besides lr.
VAE_HYPERPARAMETERS = (RECON_SIGMA, KL_WEIGHT)
#: The commitment loss's weight: pythae's ``commitment_loss_factor``, the paper's beta.
COMMITMENT = Hyperparameter("commitment", 0.25, "the VQ-VAE's commitment loss weight (the paper's beta)")
#: The codebook loss's weight: pythae's ``quantization_loss_factor`` (unused when the codebook is an EMA).
QUANTIZATION = Hyperparameter("quantization", 1.0, "the VQ-VAE's codebook (quantization) loss weight")
#: Every hyperparameter a VQ-VAE (``jaxvae.vqvae.VQVAEModel``) may read besides lr.
VQVAE_HYPERPARAMETERS = (COMMITMENT, QUANTIZATION)
#: The index-code mutual information's weight.
ALPHA = Hyperparameter("alpha", 1.0, "the beta-TCVAE's weight of the index-code mutual information")
#: The total correlation's weight: the beta of the beta-TCVAE.
BETA = Hyperparameter("beta", 1.0, "the beta-TCVAE's weight of the total correlation")
#: The dimension-wise KL's weight.
GAMMA = Hyperparameter("gamma", 1.0, "the beta-TCVAE's weight of the dimension-wise KL")
#: Every hyperparameter a beta-TCVAE (``jaxvae.betatc.BetaTCVAEModel``) may read besides lr.
BETATC_HYPERPARAMETERS = (RECON_SIGMA, ALPHA, BETA, GAMMA)


@dataclass(frozen=True)
class Family:
    """A model of the command line (``jaxvae train --model NAME``): the class that builds it from a
    ``VAEConfig`` and the data (its ``for_dataset``), imported when a command runs, and every
    hyperparameter it may read besides lr (its value flags; the class's ``family_hyperparameters``).

    Attributes:
        name: The ``--model`` value.
        model_class: ``module:qualname`` of the class.
        hyperparameters: Every hyperparameter a model of the class may read besides lr.
        help: One line for ``--help``.
    """

    name: str
    model_class: str
    hyperparameters: tuple[Hyperparameter, ...]
    help: str


#: The command line's models by ``--model`` name; ``DEFAULT_FAMILY`` (the blog's) when none is given.
FAMILIES = {f.name: f for f in (
    Family("vae", "jaxvae.vae:VAEModel", VAE_HYPERPARAMETERS, "the blog's VAE"),
    Family("cvae", "jaxvae.cvae:ConditionalVAEModel", VAE_HYPERPARAMETERS,
           "conditional VAE: the label joins the encoder's input and the decoder's latent"),
    Family("vqvae", "jaxvae.vqvae:VQVAEModel", VQVAE_HYPERPARAMETERS,
           "VQ-VAE: an EMA codebook of 512 codes of --latent-dim entries, straight-through gradient"),
    Family("betatc", "jaxvae.betatc:BetaTCVAEModel", BETATC_HYPERPARAMETERS,
           "beta-TCVAE: the KL split into mutual information, total correlation and dimension-wise KL"),
)}
DEFAULT_FAMILY = "vae"


@dataclass(frozen=True)
class VAEConfig:
    """Architecture and loss of the VAE.

    What a sweep varies (KL weight, sigma, lr) is in ``TrainConfig``. Beyond the blog, the defaults keep
    it. An ``init`` pair compares by identity, as functions do (reuse it so equal configs share compiled
    code), and cannot be saved to a file (``config_to_dict`` refuses it): ``fit`` from Python trains
    such a model.

    Args:
        input_dim: Features per example (784 for 28x28 images).
        hidden: The encoder trunk's widths.
        latent_dim: The latent's dimension.
        activation: The hidden layers' activation, one of ``ACTIVATIONS``.
        negative_slope: LeakyReLU's slope below 0.
        output_activation: The decoder's output, ``"sigmoid"`` or ``"identity"`` (ignored for a
            Bernoulli likelihood).
        decoder_hidden: The decoder's widths; None mirrors ``hidden`` (reversed).
        likelihood: ``"gaussian"``, the blog's, with fixed sigma (``TrainConfig.recon_sigma``), or
            ``"bernoulli"``, whose decoder outputs logits (``decode`` returns the pixel probabilities).
        objective: ``"elbo"``, or ``"iwae"``: the importance-weighted bound (Burda et al. 2015).
        iwae_k: The IWAE's samples per example; 1 for the ELBO.
        architecture: ``"mlp"``, or ``"conv"``: VGG-style 3x3 conv stacks (``hidden`` unused).
        conv_channels: Channels per conv block; each block halves the image side.
        compute_dtype: ``"bfloat16"`` runs the matmuls/convs in bfloat16; parameters and loss stay
            float32.
        init: ``"torch"`` (PyTorch's default per layer kind, uniform in +-1/sqrt(fan_in): the blog's, and
            what the parity suite compares), ``"flax"`` (lecun-normal kernels, zero biases), or, from
            Python, a ``(kernel_init, bias_init)`` pair for every layer.

    Raises:
        InputError: A field out of range or not one of its choices; the message names it.
    """

    input_dim: int = 784
    hidden: tuple[int, ...] = (400,)
    latent_dim: int = 2
    activation: str = "leaky_relu"
    negative_slope: float = 0.01
    output_activation: str = "sigmoid"
    decoder_hidden: tuple[int, ...] | None = None
    likelihood: str = "gaussian"
    objective: str = "elbo"
    iwae_k: int = 1
    architecture: str = "mlp"
    conv_channels: tuple[int, ...] = (32, 64)
    compute_dtype: str = "float32"
    init: str | tuple = "torch"

    def __post_init__(self):
        # Lists from JSON or the command line become tuples so that the config stays hashable.
        for name in ("hidden", "decoder_hidden", "conv_channels", "init"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        check_positive_int("input_dim", self.input_dim)
        check_positive_int("latent_dim", self.latent_dim)
        _positive_ints("hidden", self.hidden)
        if self.decoder_hidden is not None:
            _positive_ints("decoder_hidden", self.decoder_hidden)
        _one_of("activation", self.activation, ACTIVATIONS)
        _one_of("output_activation", self.output_activation, OUTPUT_ACTIVATIONS)
        _finite_number("negative_slope", self.negative_slope, positive=False)
        _one_of("likelihood", self.likelihood, LIKELIHOODS)
        _one_of("objective", self.objective, OBJECTIVES)
        check_positive_int("iwae_k", self.iwae_k)
        if self.objective == "elbo" and self.iwae_k != 1:
            raise InputError(f"iwae_k={self.iwae_k} needs objective='iwae' (the ELBO uses one sample)")
        _one_of("architecture", self.architecture, ARCHITECTURES)
        _positive_ints("conv_channels", self.conv_channels, non_empty=True)
        if self.architecture == "conv":
            self.image_side  # validates that input_dim is a square image the conv blocks can halve
        _one_of("compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
        _check_init(self.init)

    @property
    def image_side(self) -> int:
        """The side of the square single-channel image for ``architecture="conv"``.

        Raises:
            InputError: ``input_dim`` is not a square, or its side is not divisible by
                2 ** len(conv_channels).
        """
        side = math.isqrt(self.input_dim)
        if side * side != self.input_dim:
            raise InputError(f"input_dim={self.input_dim} is not a square image (side*side); "
                             "architecture='conv' needs square single-channel images such as 784 = 28*28")
        factor = 2 ** len(self.conv_channels)
        if side % factor:
            raise InputError(f"input_dim={self.input_dim}: image side {side} is not divisible by {factor} "
                             f"(2 ** len(conv_channels={self.conv_channels})); use fewer conv_channels")
        return side

    @property
    def decoder_widths(self) -> tuple[int, ...]:
        """The decoder's hidden widths: ``decoder_hidden``, or the encoder's reversed."""
        return self.decoder_hidden if self.decoder_hidden is not None else tuple(reversed(self.hidden))

    def replace(self, **changes) -> "VAEConfig":
        """A copy with the given fields changed.

        Args:
            **changes: Fields and their new values.

        Returns:
            The new config, validated.

        Raises:
            InputError: A new value is out of range.
        """
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings and the objective's weights (defaults: the blog's, Adam with PyTorch's).

    ``lr``, ``kl_weight``, ``recon_sigma`` and ``hyper`` are the hyperparameters: data in the train state,
    so models that differ only in them share one compiled program, and a sweep varies them. Each model
    declares which it reads (``Model.hyperparameters``); the blog's family has fields of its own here,
    any other model's go in ``hyper`` by name. Validation and
    evaluation data of Bernoulli models are binarised once from ``binarize_seed + 1``, comparable
    between epochs and runs.

    Args:
        batch_size: Rows per batch.
        lr: The learning rate.
        kl_weight: The KL term's weight (the blog's ``distrib_loss_rate``; a beta-VAE's beta).
        recon_sigma: The Gaussian likelihood's sigma (the blog's ``gauss_sigma``).
        max_epochs: The most epochs a run trains.
        b1: Adam's first-moment decay.
        b2: Adam's second-moment decay.
        adam_eps: Adam's epsilon, at most ``ADAM_EPS_MAX``.
        plateau_factor: The plateau schedule's lr factor on a plateau, in (0, 1).
        plateau_patience: Epochs without improvement before the plateau schedule lowers the lr.
        plateau_threshold: The relative improvement the plateau schedule counts.
        min_lr: The plateau schedule's lowest lr.
        stop_lr: The plateau schedule stops training before an epoch whose lr is below this.
        drop_last: False keeps the last partial batch, and an epoch's loss is the unweighted mean of
            its batches', as the blog's.
        seed: Seeds the parameters, the batches' order and the noise.
        binarize: For Bernoulli models: ``"none"``; ``"dynamic"`` draws x ~ Bernoulli(pixel) afresh for
            each training batch; ``"fixed"`` binarises the training data once from ``binarize_seed``.
        binarize_seed: Seeds the fixed binarisation.
        lr_schedule: ``"plateau"`` is PyTorch's ReduceLROnPlateau on the validation loss, the blog's;
            ``"constant"`` keeps ``lr``; ``"burda"`` is Burda et al.'s 3**i-epoch stages at
            ``lr * 10**(-i/7)``; ``"cosine"`` decays ``lr`` to 0 over ``max_epochs``
            (``jaxvae.schedules``).
        kl_warmup_epochs: Above 0, the KL weight rises linearly (step by step) from 0 to ``kl_weight``
            over that many epochs.
        hyper: The values of a model's other hyperparameters by name (a beta-TCVAE's ``{"beta": 6.0}``),
            checked against the model's declaration when it trains; missing ones take their defaults.

    Raises:
        InputError: A field out of range or not one of its choices, or ``stop_lr`` above ``lr`` under
            the plateau schedule; the message names the field.
    """

    batch_size: int = 128
    lr: float = LR.default
    kl_weight: float = KL_WEIGHT.default
    recon_sigma: float = RECON_SIGMA.default
    max_epochs: int = 100
    b1: float = 0.9
    b2: float = 0.999
    adam_eps: float = 1e-8
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    plateau_threshold: float = 1e-4
    min_lr: float = 0.0
    stop_lr: float = 1e-6
    drop_last: bool = False
    seed: int = 0
    binarize: str = "none"
    binarize_seed: int = 0
    lr_schedule: str = "plateau"
    kl_warmup_epochs: float = 0.0
    hyper: Mapping[str, float] = field(default_factory=dict, hash=False, metadata={"flag": False})

    def __post_init__(self):
        check_positive_int("batch_size", self.batch_size)
        for declared in OWN_HYPERPARAMETERS:
            declared.check(getattr(self, declared.name))
        if not isinstance(self.hyper, Mapping):
            raise InputError(f"hyper must be a mapping of hyperparameter names to numbers, got {self.hyper!r}")
        for name, value in self.hyper.items():
            if name in TRAIN_FIELDS:
                raise InputError(f"hyper[{name!r}]: {name} is a TrainConfig field; set it as TrainConfig({name}=...)")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"hyper[{name!r}] must be a finite number, got {value!r}")
        object.__setattr__(self, "hyper", {str(k): float(v) for k, v in self.hyper.items()})
        check_non_negative_int("max_epochs", self.max_epochs)
        for name in ("b1", "b2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise InputError(f"{name} must be in [0, 1), got {value!r}")
        _finite_number("adam_eps", self.adam_eps, positive=True)
        if self.adam_eps > ADAM_EPS_MAX:
            raise InputError(f"adam_eps must be at most {ADAM_EPS_MAX:g}, got {self.adam_eps!r}: above it, eps outweighs "
                             "Adam's sqrt(v) and every step shrinks to lr * m / eps (at 1e300, to nothing); to take "
                             "smaller steps, lower lr")
        if not isinstance(self.plateau_factor, (int, float)) or not 0 < self.plateau_factor < 1:
            raise InputError(f"plateau_factor must be in (0, 1), got {self.plateau_factor!r}")
        check_non_negative_int("plateau_patience", self.plateau_patience)
        _finite_number("plateau_threshold", self.plateau_threshold, positive=False)
        _finite_number("min_lr", self.min_lr, positive=False)
        _finite_number("stop_lr", self.stop_lr, positive=False)
        check_seed("seed", self.seed)
        _one_of("binarize", self.binarize, BINARIZATIONS)
        check_seed("binarize_seed", self.binarize_seed, headroom=1)
        _one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.lr_schedule == "plateau" and self.stop_lr > self.lr:
            # the plateau ends the run before an epoch whose lr is below stop_lr: this one never starts
            raise InputError(f"stop_lr={self.stop_lr!r} is above lr={self.lr!r}: the plateau schedule would stop "
                             "before the first epoch; lower stop_lr or raise lr")
        _finite_number("kl_warmup_epochs", self.kl_warmup_epochs, positive=False)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with the given fields changed.

        Args:
            **changes: Fields and their new values.

        Returns:
            The new config, validated.

        Raises:
            InputError: A new value is out of range.
        """
        return dataclasses.replace(self, **changes)


    def hyper_values(self, declared: Sequence[Hyperparameter]) -> dict[str, float]:
        """The values of ``declared`` (a model's hyperparameters, lr among them or not): a field of this
        config where it has one of the name, else ``hyper``'s entry, else the default.

        Args:
            declared: The hyperparameters to read.

        Returns:
            Their values by name, in order.

        Raises:
            InputError: A value out of its declared range (the message names it).
        """
        return {h.name: h.check(getattr(self, h.name) if h.name in TRAIN_FIELDS else self.hyper.get(h.name, h.default),
                                "" if h.name in TRAIN_FIELDS else "hyper")
                for h in declared}

    def with_hyper(self, **values: float) -> "TrainConfig":
        """A copy with hyperparameter values set: this config's fields by name, any other into ``hyper``.

        Args:
            **values: Hyperparameter names and their values.

        Returns:
            The new config, validated.
        """
        fields = {k: v for k, v in values.items() if k in TRAIN_FIELDS}
        others = {k: v for k, v in values.items() if k not in TRAIN_FIELDS}
        return self.replace(**fields, **({"hyper": {**self.hyper, **others}} if others else {}))


#: The hyperparameters with a TrainConfig field of their own: the optimizer's lr and the blog's family's.
OWN_HYPERPARAMETERS = (LR, KL_WEIGHT, RECON_SIGMA)
TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def check_configs(vae_config: VAEConfig, train_config: TrainConfig) -> None:
    """The rules that join the two configs: the IWAE bound has no KL term to weight or warm up.

    Args:
        vae_config: The model's config.
        train_config: The training config.

    Raises:
        InputError: ``kl_weight`` or ``kl_warmup_epochs`` set for ``objective="iwae"``.
    """
    if vae_config.objective == "iwae":
        if train_config.kl_weight != 1.0:
            raise InputError(f"kl_weight={train_config.kl_weight} applies to objective='elbo' only; "
                             "the IWAE bound has no KL weight")
        if train_config.kl_warmup_epochs > 0:
            raise InputError("kl_warmup_epochs applies to objective='elbo' only; the IWAE bound has no KL weight")


def configs_from_dicts(model: dict, training: dict) -> tuple[VAEConfig, TrainConfig]:
    """Both configs from their JSON form (``config_to_dict``). Files of jaxvae 0.2 and earlier kept
    ``kl_weight`` and ``recon_sigma`` in the model's dict: they move to the training config here.

    Args:
        model: The ``VAEConfig``'s dict.
        training: The ``TrainConfig``'s dict.

    Returns:
        ``(vae_config, train_config)``.

    Raises:
        InputError: Either is not a dict, a field is out of range, or the two do not go together.
        TypeError: A dict holds a key that is no field of its config.
    """
    if not isinstance(model, dict) or not isinstance(training, dict):
        raise InputError("the model and training configs must be JSON objects")
    model, training = dict(model), dict(training)
    for name in ("kl_weight", "recon_sigma"):
        if name in model:
            training.setdefault(name, model.pop(name))
    vae_config, train_config = VAEConfig(**model), TrainConfig(**training)
    check_configs(vae_config, train_config)
    return vae_config, train_config


def config_to_dict(config: VAEConfig | TrainConfig) -> dict:
    """A config as a JSON-ready dict (tuples as lists); ``VAEConfig(**d)`` / ``TrainConfig(**d)`` rebuild it.

    Args:
        config: A ``VAEConfig`` or ``TrainConfig``.

    Returns:
        The fields by name.

    Raises:
        InputError: A ``VAEConfig`` whose ``init`` is a pair of functions, which JSON cannot hold.
    """
    if is_custom_init(getattr(config, "init", None)):
        raise InputError("init: a custom (kernel_init, bias_init) pair cannot be saved to a file (config.json, "
                         "checkpoints and torch files hold 'torch' or 'flax'); train such a model from Python with fit()")
    return {f.name: (list(v) if isinstance(v := getattr(config, f.name), tuple) else v)
            for f in dataclasses.fields(config)}
