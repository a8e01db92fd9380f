"""Tests of torchref, the PyTorch reference of the blog's VAE (tiny data, CPU, a few seconds)."""

import gzip
import itertools

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import torchref
from torchref import (
    AutoencoderDataset,
    DiagGaussSample,
    GaussSimilarityLoss,
    SimpleGaussVAEFCDecoder,
    SimpleGaussVAEFCEncoder,
    UnitGaussKullbackLeiblerDivergenceLoss,
    VGGStackedLinear,
    blog_decoder_descriptors,
    blog_encoder_descriptors,
    build_blog_model,
    load_mnist_idx,
    read_idx,
    train_blog,
    train_one_epoch,
    unitgauss_kullback_leibler_divergence,
    validate_one_epoch,
)

# float32 torch vs float64 numpy on O(1..100) values: relative 1e-5 is ample and still tight.
RTOL, ATOL = 1e-5, 1e-5


def _linears(module):
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


# ---------------------------------------------------------------------------- losses vs numpy


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0, 2.5])
def test_gauss_similarity_loss_matches_numpy(sigma):
    rng = np.random.default_rng(1)
    x = rng.random((7, 3, 4)).astype(np.float32)
    x_hat = rng.random((7, 3, 4)).astype(np.float32)
    got = GaussSimilarityLoss(sigma)(torch.from_numpy(x), torch.from_numpy(x_hat)).item()
    d = x.astype(np.float64).reshape(7, -1) - x_hat.astype(np.float64).reshape(7, -1)
    want = np.mean(np.sum(d**2, axis=-1) / (2 * sigma**2))
    assert got == pytest.approx(want, rel=RTOL, abs=ATOL)
    # symmetric in its arguments, as the blog calls it loss(preds, targets)
    swapped = GaussSimilarityLoss(sigma)(torch.from_numpy(x_hat), torch.from_numpy(x)).item()
    assert swapped == got


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan")])
def test_gauss_similarity_loss_rejects_bad_sigma(sigma):
    with pytest.raises(ValueError, match="gauss_sigma"):
        GaussSimilarityLoss(sigma)


def test_gauss_similarity_loss_sigma_is_buffer():
    loss = GaussSimilarityLoss(2.0)
    assert "gauss_sigma" in dict(loss.named_buffers())
    assert list(loss.parameters()) == []


def test_kl_per_sample_and_mean_match_numpy():
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(9, 5)).astype(np.float32)
    logsigma = rng.normal(scale=0.7, size=(9, 5)).astype(np.float32)
    sigma = np.exp(logsigma)
    params = (torch.from_numpy(mu), torch.from_numpy(sigma))
    m, s = mu.astype(np.float64), sigma.astype(np.float64)
    want = 0.5 * np.sum(s**2 + m**2 - 1 - 2 * np.log(s), axis=-1)
    got = unitgauss_kullback_leibler_divergence(params)
    assert got.shape == (9,)
    np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=ATOL)
    assert UnitGaussKullbackLeiblerDivergenceLoss()(params).item() == pytest.approx(
        want.mean(), rel=RTOL, abs=ATOL
    )
    # KL is zero exactly at the prior
    zero = unitgauss_kullback_leibler_divergence((torch.zeros(3, 2), torch.ones(3, 2)))
    assert torch.equal(zero, torch.zeros(3))


# ------------------------------------------------------------------------- descriptor rules


def test_descriptor_defaults():
    net = VGGStackedLinear([{"in_features": 5, "out_features": 3}]).network
    assert len(net) == 2
    assert isinstance(net[0], nn.Linear) and net[0].bias is not None
    assert (net[0].in_features, net[0].out_features) == (5, 3)
    assert isinstance(net[1], nn.ReLU)


def test_descriptor_no_bias_no_activation_dropout_and_repeats():
    net = VGGStackedLinear(
        [
            {"in_features": 4, "out_features": 6, "bias": False, "activation": None},
            {"nof_layers": 3, "out_features": 8, "activation": nn.Tanh, "dropout_p": 0.25},
        ]
    ).network
    assert isinstance(net[0], nn.Linear) and net[0].bias is None
    assert isinstance(net[1], nn.Linear)  # no activation after the first layer
    lin = [m for m in net if isinstance(m, nn.Linear)]
    assert len(lin) == 4
    # in_features inferred from the previous descriptor, then out -> out within the stack
    assert [(m.in_features, m.out_features) for m in lin] == [(4, 6), (6, 8), (8, 8), (8, 8)]
    kinds = [type(m) for m in net][1:]
    assert kinds == [nn.Linear, nn.Tanh, nn.Dropout] * 3
    assert all(m.p == 0.25 for m in net if isinstance(m, nn.Dropout))
    assert VGGStackedLinear([{"in_features": 4, "out_features": 6}])(torch.ones(2, 4)).shape == (2, 6)


def test_descriptor_errors_name_index_and_key():
    with pytest.raises(ValueError, match=r"descriptor 1.*out_features"):
        VGGStackedLinear([{"in_features": 3, "out_features": 2}, {"nof_layers": 2}])
    with pytest.raises(ValueError, match=r"descriptor 0.*in_features"):
        VGGStackedLinear([{"out_features": 2}])
    with pytest.raises(ValueError, match=r"descriptor 0.*out_features"):
        VGGStackedLinear([{"in_features": 3, "out_features": 0}])
    with pytest.raises(ValueError, match=r"descriptor 0.*nof_layers"):
        VGGStackedLinear([{"in_features": 3, "out_features": 2, "nof_layers": 0}])


def test_descriptors_are_not_mutated():
    prev = [{"nof_layers": 1, "in_features": 10, "out_features": 7}]
    heads = [{"nof_layers": 1, "out_features": 3, "activation": None}]
    snapshot = ([dict(d) for d in prev], [dict(d) for d in heads])
    SimpleGaussVAEFCEncoder(prev, heads)
    assert (prev, heads) == snapshot


# ------------------------------------------------------------------------------ modules


def test_encoder_heads_infer_in_features_and_shapes():
    prev = [
        {"in_features": 10, "out_features": 8, "activation": nn.LeakyReLU},
        {"out_features": 6, "dropout_p": 0.1},  # trunk ends in a Dropout, not a Linear
    ]
    heads = [{"out_features": 3, "activation": None}]
    enc = SimpleGaussVAEFCEncoder(prev, heads)
    for head in (enc.gauss_mu_network, enc.gauss_logsigma_network):
        (lin,) = _linears(head)
        assert (lin.in_features, lin.out_features) == (6, 3)
    assert enc.gauss_mu_network.network[0].weight is not enc.gauss_logsigma_network.network[0].weight
    enc.eval()
    x = torch.randn(5, 10)
    mu, sigma = enc(x)
    assert mu.shape == sigma.shape == (5, 3)
    trunk = enc.prev_network(x)
    torch.testing.assert_close(mu, enc.gauss_mu_network(trunk), rtol=0, atol=0)
    torch.testing.assert_close(sigma, torch.exp(enc.gauss_logsigma_network(trunk)), rtol=0, atol=0)


def test_encoder_needs_head_descriptors_or_a_linear():
    with pytest.raises(ValueError):
        SimpleGaussVAEFCEncoder([{"in_features": 4, "out_features": 3}], [])
    with pytest.raises(ValueError, match="in_features"):
        SimpleGaussVAEFCEncoder([], [{"out_features": 2}])


def test_diag_gauss_sample_given_eps_is_exact():
    mu, sigma, eps = torch.randn(4, 3), torch.rand(4, 3) + 0.1, torch.randn(4, 3)
    z = DiagGaussSample()((mu, sigma), eps)
    assert torch.equal(z, mu + sigma * eps)
    z64 = DiagGaussSample()((mu, sigma), eps.double().numpy())  # numpy noise, cast to sigma's dtype
    assert z64.dtype == torch.float32 and torch.equal(z64, z)
    with pytest.raises(ValueError, match="shape"):
        DiagGaussSample()((mu, sigma), torch.zeros(4, 2))


def test_diag_gauss_sample_seeded_reproducible_and_matches_blog_draw():
    mu, sigma = torch.randn(6, 2), torch.rand(6, 2) + 0.1
    torch.manual_seed(123)
    z1 = DiagGaussSample()((mu, sigma))
    torch.manual_seed(123)
    z2 = DiagGaussSample()((mu, sigma))
    assert torch.equal(z1, z2)
    torch.manual_seed(123)
    blog_eps = torch.distributions.normal.Normal(0, 1).sample(sigma.size())  # the blog's draw
    assert torch.equal(z1, mu + sigma * blog_eps)


def test_decoder_shapes():
    dec = SimpleGaussVAEFCDecoder([{"in_features": 2, "out_features": 5}, {"out_features": 9}])
    assert dec(torch.randn(4, 2)).shape == (4, 9)
    assert "network.network.0.weight" in dec.state_dict()


def test_blog_model_state_dict_and_output_range():
    encoder, sampler, decoder = build_blog_model()
    enc_shapes = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert enc_shapes == {
        "prev_network.network.0.weight": (400, 784),
        "prev_network.network.0.bias": (400,),
        "gauss_mu_network.network.0.weight": (2, 400),
        "gauss_mu_network.network.0.bias": (2,),
        "gauss_logsigma_network.network.0.weight": (2, 400),
        "gauss_logsigma_network.network.0.bias": (2,),
    }
    dec_shapes = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    assert dec_shapes == {
        "network.network.0.weight": (400, 2),
        "network.network.0.bias": (400,),
        "network.network.2.weight": (784, 400),
        "network.network.2.bias": (784,),
    }
    assert isinstance(encoder.prev_network.network[1], nn.LeakyReLU)
    assert encoder.prev_network.network[1].negative_slope == 0.01
    assert len(encoder.gauss_mu_network.network) == 1  # heads have no activation
    assert isinstance(decoder.network.network[1], nn.LeakyReLU)
    assert isinstance(decoder.network.network[3], nn.Sigmoid)
    assert list(sampler.parameters()) == []
    with torch.no_grad():
        y = decoder(sampler(encoder(torch.rand(8, 784))))
    assert y.shape == (8, 784) and float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_blog_model_init_order_follows_torch_seed():
    # Same seed -> same weights; this is what lets a torch-seeded run be reproduced elsewhere.
    torch.manual_seed(0)
    a = build_blog_model(20, 3)
    torch.manual_seed(0)
    b = build_blog_model(20, 3)
    for ma, mb in ((a[0], b[0]), (a[2], b[2])):
        for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)


def test_deeper_descriptors():
    prev, heads = blog_encoder_descriptors(30, 4, hidden=(16, 8))
    dec = blog_decoder_descriptors(30, 4, hidden=(16, 8))
    enc = SimpleGaussVAEFCEncoder(prev, heads)
    assert [(m.in_features, m.out_features) for m in _linears(enc)] == [
        (30, 16), (16, 8), (8, 4), (8, 4)
    ]
    decoder = SimpleGaussVAEFCDecoder(dec)
    assert [(m.in_features, m.out_features) for m in _linears(decoder)] == [
        (4, 8), (8, 16), (16, 30)
    ]
    assert blog_encoder_descriptors() == blog_encoder_descriptors(784, 2, (400,))


def test_autoencoder_dataset():
    imgs = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    ds = AutoencoderDataset(imgs)
    x, y = ds[1]
    assert len(ds) == 3 and x.shape == (784,) and x.dtype == torch.float32
    assert torch.equal(x, y)
    torch.testing.assert_close(x, torch.from_numpy(imgs[1].reshape(-1) / 255.0).float())
    flat = AutoencoderDataset(torch.rand(4, 5, dtype=torch.float64))
    assert flat.data.dtype == torch.float32 and flat.data.shape == (4, 5)


# ------------------------------------------------------------------------------ loops


def _small_setup(seed=0, n=512, dim=64):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    # low-rank data, so a 4-d latent can actually learn something in a few epochs
    data = torch.sigmoid(torch.randn(n, 4, generator=g) @ torch.randn(4, dim, generator=g))
    encoder, sampler, decoder = build_blog_model(dim, 4, hidden=(32,))
    return data, encoder, sampler, decoder


def _validate(encoder, sampler, decoder, loader, seed=7, **kw):
    torch.manual_seed(seed)
    return validate_one_epoch(
        encoder, sampler, decoder, loader, GaussSimilarityLoss(1.0),
        distrib_loss_rate=1, distrib_loss_func=UnitGaussKullbackLeiblerDivergenceLoss(),
        verbose=False, **kw,
    )


def test_train_one_epoch_lowers_the_loss():
    data, encoder, sampler, decoder = _small_setup()
    loader = DataLoader(AutoencoderDataset(data), batch_size=64, shuffle=True)
    val_loader = DataLoader(AutoencoderDataset(data), batch_size=128, shuffle=False)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=1e-2)
    before = _validate(encoder, sampler, decoder, val_loader)
    losses = [
        train_one_epoch(
            encoder, sampler, decoder, loader, GaussSimilarityLoss(), optimizer,
            distrib_loss_rate=1, distrib_loss_func=UnitGaussKullbackLeiblerDivergenceLoss(),
            verbose=False,
        )
        for _ in range(3)
    ]
    after = _validate(encoder, sampler, decoder, val_loader)
    assert losses[0] > losses[2]
    assert after < before
    assert not encoder.training  # validate_one_epoch leaves eval mode


def test_loops_print_like_the_blog(capsys):
    data, encoder, sampler, decoder = _small_setup(n=40, dim=8)
    loader = DataLoader(AutoencoderDataset(data), batch_size=16)  # 16 + 16 + 8: partial kept
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.0)
    train_one_epoch(encoder, sampler, decoder, loader, GaussSimilarityLoss(), optimizer)
    validate_one_epoch(encoder, sampler, decoder, loader, GaussSimilarityLoss())
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("batch 0 loss: ") and out[1].startswith("Train: Avg loss: ")
    assert out[2].startswith("batch 0 loss: ") and out[3].startswith("Validate: Avg loss: ")
    _validate(encoder, sampler, decoder, loader)
    assert capsys.readouterr().out == ""  # verbose=False is silent


def test_noise_hook_is_deterministic_and_matches_manual():
    data, encoder, sampler, decoder = _small_setup(n=100, dim=12)
    loader = DataLoader(AutoencoderDataset(data), batch_size=32, shuffle=False)  # 32,32,32,4
    g = torch.Generator().manual_seed(5)
    noise = [torch.randn(len(x), 4, generator=g) for x, _ in loader]
    a = _validate(encoder, sampler, decoder, loader, seed=1, noise=noise)
    b = _validate(encoder, sampler, decoder, loader, seed=2, noise=iter(noise))
    assert a == b
    manual = []
    with torch.no_grad():
        for (x, y), eps in zip(loader, noise):
            mu, sigma = encoder(x)
            x_hat = decoder(mu + sigma * eps)
            rec = np.mean(np.sum((x.double() - x_hat.double()).numpy() ** 2, -1) / 2)
            m, s = mu.double().numpy(), sigma.double().numpy()
            kl = np.mean(0.5 * np.sum(s**2 + m**2 - 1 - 2 * np.log(s), -1))
            manual.append(rec + kl)
    assert a == pytest.approx(np.mean(manual), rel=RTOL)
    # unweighted mean of per-batch losses, even though the last batch is partial
    with pytest.raises(ValueError, match="noise ran out"):
        _validate(encoder, sampler, decoder, loader, noise=noise[:2])


def test_noise_hook_in_training_is_reproducible():
    results = []
    for _ in range(2):
        data, encoder, sampler, decoder = _small_setup(n=64, dim=8)
        loader = DataLoader(AutoencoderDataset(data), batch_size=16, shuffle=False)
        opt = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=1e-3)
        g = torch.Generator().manual_seed(3)
        noise = (torch.randn(16, 4, generator=g) for _ in itertools.count())
        torch.manual_seed(99)  # differs from the in-model draw; only `noise` may matter
        results.append(train_one_epoch(
            encoder, sampler, decoder, loader, GaussSimilarityLoss(), opt,
            distrib_loss_rate=1, distrib_loss_func=UnitGaussKullbackLeiblerDivergenceLoss(),
            noise=noise, verbose=False,
        ))
    assert results[0] == results[1]


# ------------------------------------------------------------------------------ data


def _idx_bytes(arr, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_idx_reader(tmp_path, compress):
    rng = np.random.default_rng(0)
    sets = {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (5, 28, 28)), 2051),
        "train-labels-idx1-ubyte": (rng.integers(0, 10, 5), 2049),
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (3, 28, 28)), 2051),
        "t10k-labels-idx1-ubyte": (rng.integers(0, 10, 3), 2049),
    }
    for name, (arr, magic) in sets.items():
        raw = _idx_bytes(arr, magic)
        if compress:
            (tmp_path / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (tmp_path / name).write_bytes(raw)
    suffix = ".gz" if compress else ""
    imgs = read_idx(tmp_path / ("train-images-idx3-ubyte" + suffix))
    assert imgs.dtype == np.uint8 and np.array_equal(imgs, sets["train-images-idx3-ubyte"][0])
    mnist = load_mnist_idx(tmp_path)
    assert mnist["train_images"].shape == (5, 784) and mnist["train_images"].dtype == np.float32
    np.testing.assert_array_equal(
        mnist["test_images"], sets["t10k-images-idx3-ubyte"][0].reshape(3, -1).astype(np.float32) / 255
    )
    np.testing.assert_array_equal(mnist["train_labels"], sets["train-labels-idx1-ubyte"][0])


def test_idx_reader_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes((1234).to_bytes(4, "big") + b"\0" * 8)
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(_idx_bytes(np.zeros((2, 3, 3)), 2051)[:-1])
    with pytest.raises(ValueError, match="bytes"):
        read_idx(short)
    with pytest.raises(FileNotFoundError):
        load_mnist_idx(tmp_path)


# ------------------------------------------------------------------------------ full run


def test_train_blog_two_epochs(capsys):
    rng = np.random.default_rng(0)
    train = rng.random((300, 28, 28)).astype(np.float32)
    val = rng.random((70, 784)).astype(np.float32)
    history = train_blog(train, val, epochs=2, verbose=False)
    assert history["epoch"] == [1, 2]
    assert history["lr"] == [1e-3, 1e-3]
    for key in ("train_loss", "val_loss", "seconds"):
        assert len(history[key]) == 2 and all(np.isfinite(history[key]))
    assert capsys.readouterr().out == ""
    # same seed, same history (init, shuffles and noise all follow the seed)
    again = train_blog(train, val, epochs=2, verbose=False)
    assert again["train_loss"] == history["train_loss"]
    assert again["val_loss"] == history["val_loss"]


def test_train_blog_stops_when_lr_is_below_floor():
    x = np.random.default_rng(0).random((20, 6)).astype(np.float32)
    assert train_blog(x, x, epochs=3, lr=5e-7, verbose=False)["epoch"] == []
    with pytest.raises(ValueError):
        train_blog(x, None, epochs=1, verbose=False)


def test_public_names():
    for name in torchref.__all__:
        assert getattr(torchref, name) is not None
