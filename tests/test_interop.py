import jax
import numpy as np
import pytest

from jaxvae import VAEConfig, init_params
from jaxvae.errors import InputError
from jaxvae.interop import (
    check_params_shapes,
    from_torch,
    infer_config,
    layer_table,
    load_torch,
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


# --------------------------------------------------------------------------- load_torch: checks at the door

SMALL = VAEConfig(input_dim=64, hidden=(8,), latent_dim=2)


def _blog_file(tmp_path, name="model.pt", cast=None, poison=None, **extra):
    """A torch file of the small blog model; ``cast`` converts the encoder's first weight to a dtype,
    ``poison`` writes that value into it; ``extra`` are metadata fields."""
    torch.manual_seed(0)
    encoder, _, decoder = torchref.build_blog_model(64, 2, hidden=(8,))
    enc = encoder.state_dict()
    key = "prev_network.network.0.weight"
    if cast is not None:
        enc[key] = enc[key].to(cast)
    if poison is not None:
        enc[key][0, 0] = poison
    path = tmp_path / name
    torch.save({"encoder": enc, "decoder": decoder.state_dict(), **extra}, path)
    return path


def test_a_valid_file_loads_and_keeps_its_metadata(tmp_path):
    path = _blog_file(tmp_path, dataset="digits", image_shape=[8, 8], epoch=3, data_dir="/data")
    params, config, blob = load_torch(path)
    assert config == SMALL and blob["epoch"] == 3
    assert params["encoder"]["trunk"][0]["kernel"].dtype == np.float32


@pytest.mark.parametrize("content, fragment", [(b"", "empty file"), (b"not a zip at all", "not a torch file")])
def test_a_file_that_is_not_a_torch_file_is_named(tmp_path, content, fragment):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"^{path}: {fragment}"):
        load_torch(path)


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_non_floating_tensors_are_refused(tmp_path, dtype):
    path = _blog_file(tmp_path, cast=getattr(torch, dtype))
    with pytest.raises(ValueError, match=f"encoder.prev_network.network.0.weight' has dtype {dtype}; .*floating"):
        load_torch(path)


def test_meta_device_tensors_are_refused_naming_the_file_and_tensor(tmp_path):
    path = _blog_file(tmp_path, cast="meta")  # shapes without values, as torch.device("meta") builds them
    with pytest.raises(InputError, match=f"^{path}: tensor 'encoder.prev_network.network.0.weight' is on torch's "
                                         "meta device: a shape without values"):
        load_torch(path)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_cast_to_float32_with_a_warning(tmp_path, dtype):
    path = _blog_file(tmp_path, cast=getattr(torch, dtype))
    with pytest.warns(UserWarning, match=f"prev_network.network.0.weight' is {dtype}; cast to float32"):
        params, _, _ = load_torch(path)
    kernel = params["encoder"]["trunk"][0]["kernel"]
    expected = torch.load(path, weights_only=True)["encoder"]["prev_network.network.0.weight"].float().numpy().T
    assert kernel.dtype == np.float32 and np.array_equal(kernel, expected)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, value):
    with pytest.raises(ValueError, match="prev_network.network.0.weight' holds 1 non-finite values"):
        load_torch(_blog_file(tmp_path, poison=value))


@pytest.mark.parametrize("field, value", [("dataset", "cifar"), ("dataset", 3), ("image_shape", [28, 28]),
                                          ("image_shape", [8, -8]), ("image_shape", "8x8"), ("epoch", -1),
                                          ("epoch", 2.5), ("epoch", True), ("data_dir", 7)])
def test_malformed_metadata_is_refused_naming_the_field(tmp_path, field, value):
    path = _blog_file(tmp_path, **{field: value})
    with pytest.raises(ValueError, match=f"^{path}: field '{field}' is "):
        load_torch(path)
