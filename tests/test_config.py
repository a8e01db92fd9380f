import pytest

from jaxvae import TrainConfig, VAEConfig
from jaxvae.config import INT32_MAX, check_configs, config_to_dict, configs_from_dicts
from jaxvae.errors import InputError


def test_defaults_are_the_blogs():
    vc, tc = VAEConfig(), TrainConfig()
    assert (vc.input_dim, vc.hidden, vc.latent_dim) == (784, (400,), 2)
    assert (vc.activation, vc.negative_slope, vc.output_activation) == ("leaky_relu", 0.01, "sigmoid")
    assert (tc.recon_sigma, tc.kl_weight) == (1.0, 1.0)
    assert vc.decoder_widths == (400,)
    assert (tc.batch_size, tc.lr, tc.max_epochs) == (128, 1e-3, 100)
    assert (tc.b1, tc.b2, tc.adam_eps) == (0.9, 0.999, 1e-8)
    assert (tc.plateau_factor, tc.plateau_patience, tc.plateau_threshold, tc.min_lr, tc.stop_lr) == (0.1, 10, 1e-4, 0.0, 1e-6)
    assert tc.drop_last is False
    assert (tc.lr_schedule, tc.kl_warmup_epochs) == ("plateau", 0.0)


def test_configs_are_hashable_and_lists_become_tuples():
    vc = VAEConfig(hidden=[200, 100])
    assert vc.hidden == (200, 100) and vc.decoder_widths == (100, 200)
    assert hash(vc) == hash(VAEConfig(hidden=(200, 100)))


@pytest.mark.parametrize("field, value", [
    ("latent_dim", 0), ("latent_dim", 2.5), ("latent_dim", True), ("input_dim", -1),
    ("hidden", (400, 0)), ("hidden", (400.0,)), ("hidden", 400), ("decoder_hidden", (-3,)),
    ("activation", "swish!"), ("output_activation", "softmax"), ("init", "kaiming"), ("init", None),
    ("init", (len,)), ("init", (len, "zeros")),
])
def test_bad_vae_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        VAEConfig(**{field: value})


@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("batch_size", 1.5), ("lr", 0.0), ("lr", -1e-3), ("lr", float("inf")),
    ("max_epochs", -1), ("plateau_factor", 1.0), ("plateau_patience", -1), ("b2", 1.0), ("seed", "x"),
    ("lr_schedule", "linear"), ("kl_warmup_epochs", -1.0), ("kl_warmup_epochs", float("inf")),
    ("recon_sigma", 0.0), ("recon_sigma", -1.0), ("recon_sigma", float("nan")), ("kl_weight", -0.5),
])
def test_bad_train_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("cls, field, value", [
    (VAEConfig, "latent_dim", 3_000_000_000), (VAEConfig, "input_dim", 2**31), (VAEConfig, "hidden", (8, 10**12)),
    (VAEConfig, "decoder_hidden", (2**40,)), (VAEConfig, "conv_channels", (2**31,)), (TrainConfig, "batch_size", 2**31),
    (TrainConfig, "max_epochs", 10**20), (TrainConfig, "plateau_patience", 2**63),
])
def test_sizes_past_int32_are_refused_naming_the_field(cls, field, value):
    with pytest.raises(InputError, match=rf"^{field}( entries)? must be at most {INT32_MAX} \(JAX's sizes"):
        cls(**{field: value})


def test_the_largest_int32_size_is_taken():
    assert VAEConfig(latent_dim=INT32_MAX, objective="iwae", iwae_k=INT32_MAX).latent_dim == INT32_MAX
    assert TrainConfig(max_epochs=INT32_MAX).max_epochs == INT32_MAX
    with pytest.raises(InputError, match="iwae_k must be at most"):
        VAEConfig(objective="iwae", iwae_k=INT32_MAX + 1)


def test_an_adam_eps_that_would_stop_training_is_refused_with_the_reason():
    TrainConfig(adam_eps=1.0)  # Inception's, the largest in common use
    for eps in (1.5, 1e300):
        with pytest.raises(InputError, match=r"adam_eps must be at most 1, got .*every step shrinks to lr \* m / eps"):
            TrainConfig(adam_eps=eps)


def test_the_iwae_bound_refuses_a_kl_weight_in_one_place():
    iwae = VAEConfig(objective="iwae", iwae_k=5)
    check_configs(iwae, TrainConfig())
    for bad in (TrainConfig(kl_weight=0.5), TrainConfig(kl_warmup_epochs=2.0)):
        with pytest.raises(ValueError, match="kl_weight|kl_warmup_epochs"):
            check_configs(iwae, bad)
    check_configs(VAEConfig(), TrainConfig(kl_weight=0.5, kl_warmup_epochs=2.0))  # the ELBO takes both


def test_configs_of_older_files_move_the_hyperparameters_to_training():
    # jaxvae 0.2's layout: the two values in the model's dict, none in the training dict
    model = {**config_to_dict(VAEConfig(hidden=(8,))), "kl_weight": 0.25, "recon_sigma": 0.5}
    training = {k: v for k, v in config_to_dict(TrainConfig(lr=3e-3)).items() if k not in ("kl_weight", "recon_sigma")}
    vc, tc = configs_from_dicts(model, training)
    assert vc == VAEConfig(hidden=(8,)) and (tc.kl_weight, tc.recon_sigma, tc.lr) == (0.25, 0.5, 3e-3)
    assert configs_from_dicts(config_to_dict(vc), config_to_dict(tc)) == (vc, tc)  # this version's round trip


def test_a_custom_init_pair_is_hashable_but_cannot_be_saved():
    import jax

    pair = (jax.nn.initializers.he_normal(), jax.nn.initializers.zeros)
    vc = VAEConfig(init=list(pair))
    assert vc.init == pair and hash(vc) == hash(VAEConfig(init=pair)) and vc == VAEConfig(init=pair)
    with pytest.raises(ValueError, match=r"^init: a custom \(kernel_init, bias_init\) pair cannot be saved"):
        config_to_dict(vc)
    assert config_to_dict(VAEConfig(init="flax"))["init"] == "flax"
    # files written before the field existed hold no init: PyTorch's, as those runs used
    model = {k: v for k, v in config_to_dict(VAEConfig()).items() if k != "init"}
    assert configs_from_dicts(model, config_to_dict(TrainConfig()))[0].init == "torch"
