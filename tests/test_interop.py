import jax
import numpy as np
import pytest

from jaxvae import VAEConfig, init_params
from jaxvae.interop import (
    check_params_shapes,
    from_torch,
    infer_config,
    layer_table,
    to_torch,
)

torch = pytest.importorskip("torch")
import torchref  # noqa: E402


def test_layer_table_maps_the_blog_model():
    encoder, _, decoder = torchref.build_blog_model()
    assert layer_table(encoder, decoder) == [
        ("encoder", "prev_network.network.0", "trunk/0"),
        ("encoder", "gauss_mu_network.network.0", "mu"),
        ("encoder", "gauss_logsigma_network.network.0", "log_sigma"),
        ("decoder", "network.network.0", "hidden/0"),
        ("decoder", "network.network.2", "output"),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("hidden", [(400,), (64, 32)])
def test_round_trips_are_exact(hidden):
    torch.manual_seed(0)
    encoder, _, decoder = torchref.build_blog_model(784, 3, hidden=hidden)
    before = {k: v.clone() for k, v in {**encoder.state_dict(), **{"d." + k: v for k, v in decoder.state_dict().items()}}.items()}
    params = from_torch(encoder, decoder, VAEConfig(hidden=hidden, latent_dim=3))
    assert infer_config(from_torch(encoder, decoder)) == VAEConfig(hidden=hidden, latent_dim=3)
    assert np.array_equal(params["encoder"]["trunk"][0]["kernel"], encoder.prev_network.network[0].weight.detach().numpy().T)
    fresh_enc, _, fresh_dec = torchref.build_blog_model(784, 3, hidden=hidden)
    to_torch(params, fresh_enc, fresh_dec)
    after = {**fresh_enc.state_dict(), **{"d." + k: v for k, v in fresh_dec.state_dict().items()}}
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    # and jax -> torch -> jax
    jax_params = init_params(jax.random.PRNGKey(1), VAEConfig(hidden=hidden, latent_dim=3))
    back = from_torch(*to_torch(jax_params, fresh_enc, fresh_dec))
    for a, b in zip(jax.tree.leaves(jax_params), jax.tree.leaves(back)):
        assert np.array_equal(a, b)


def test_shape_mismatch_names_the_layer():
    encoder, _, decoder = torchref.build_blog_model(784, 2)
    with pytest.raises(ValueError, match=r"encoder tensor 'gauss_mu_network.network.0.weight' has shape \(2, 400\); the config expects \(5, 400\) \(jaxvae layer 'mu'\)"):
        from_torch(encoder, decoder, VAEConfig(latent_dim=5))
    params = init_params(jax.random.PRNGKey(0), VAEConfig(hidden=(300,)))
    with pytest.raises(ValueError, match=r"encoder layer 'prev_network.network.0' weight: torch shape \(400, 784\)"):
        to_torch(params, encoder, decoder)
    with pytest.raises(ValueError, match="decoder"):
        check_params_shapes({"encoder": params["encoder"], "decoder": {}}, VAEConfig(hidden=(300,)))


def test_missing_extra_and_misshaped_tensors_are_named():
    encoder, _, decoder = torchref.build_blog_model()
    enc_state = encoder.state_dict()
    missing = {k: v for k, v in enc_state.items() if k != "gauss_mu_network.network.0.bias"}
    with pytest.raises(ValueError, match="gauss_mu_network.network.0"):
        from_torch(missing, decoder)
    with pytest.raises(ValueError, match="unexpected tensors.*extra.weight"):
        from_torch({**enc_state, "extra.weight": torch.zeros(1)}, decoder)
    bad = dict(decoder.state_dict())
    bad["network.network.2.bias"] = torch.zeros(5)
    with pytest.raises(ValueError, match="network.network.2"):
        from_torch(encoder, bad)
