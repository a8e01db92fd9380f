import pytest

from jaxvae import TrainConfig, VAEConfig


def test_defaults_are_the_blogs():
    vc, tc = VAEConfig(), TrainConfig()
    assert (vc.input_dim, vc.hidden, vc.latent_dim) == (784, (400,), 2)
    assert (vc.activation, vc.negative_slope, vc.output_activation) == ("leaky_relu", 0.01, "sigmoid")
    assert (vc.recon_sigma, vc.kl_weight) == (1.0, 1.0)
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
    ("recon_sigma", 0.0), ("recon_sigma", -1.0), ("recon_sigma", float("nan")), ("kl_weight", -0.5),
    ("activation", "swish!"), ("output_activation", "softmax"),
])
def test_bad_vae_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        VAEConfig(**{field: value})


@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("batch_size", 1.5), ("lr", 0.0), ("lr", -1e-3), ("lr", float("inf")),
    ("max_epochs", -1), ("plateau_factor", 1.0), ("plateau_patience", -1), ("b2", 1.0), ("seed", "x"),
    ("lr_schedule", "linear"), ("kl_warmup_epochs", -1.0), ("kl_warmup_epochs", float("inf")),
])
def test_bad_train_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})
