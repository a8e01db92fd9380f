"""The figures: right grid, decoder means (not logits), legends, any latent size; PNGs that read back."""
import jax
import matplotlib.image
import numpy as np
import pytest

from jaxvae import plots
from jaxvae.config import VAEConfig
from jaxvae.fileio import temp_of
from jaxvae.models import decode, init_params

CONFIG = VAEConfig(input_dim=64, hidden=(32,), latent_dim=2)


@pytest.fixture(scope="module")
def params():
    return init_params(jax.random.PRNGKey(0), CONFIG)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.uniform(size=(60, 64)).astype(np.float32), np.arange(60) % 10


def test_manifold_grid_is_the_blogs():
    z = plots.manifold_grid(CONFIG, n=11, span=2.0).reshape(11, 11, 2)
    assert np.allclose(z[0, :, 0], np.linspace(-2, 2, 11))  # left to right: z0 grows
    assert np.allclose(z[:, 0, 1], np.linspace(2, -2, 11))  # top row: largest z1
    wide = plots.manifold_grid(CONFIG.replace(latent_dim=5), n=3)
    assert wide.shape == (9, 5) and np.all(wide[:, 2:] == 0)  # other dims at the prior's mean


def test_manifold_image_is_the_decoder_output(params):
    fig = plots.manifold(params, CONFIG, (8, 8), n=11)
    shown = np.asarray(fig.axes[0].images[0].get_array())
    expected = np.asarray(decode(params, plots.manifold_grid(CONFIG), CONFIG))
    assert shown.shape == (88, 88)
    assert np.allclose(shown[8:16, 16:24], expected[1 * 11 + 2].reshape(8, 8))  # row 1, column 2
    assert shown.min() >= 0 and shown.max() <= 1  # sigmoid means, not logits


def test_scatter_has_a_legend_per_digit(params, data):
    fig = plots.latent_scatter(params, CONFIG, *data)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [str(d) for d in range(10)]


@pytest.mark.slow
@pytest.mark.parametrize("latent_dim", [1, 3])
def test_every_figure_for_other_latent_sizes(tmp_path, data, latent_dim):
    config = CONFIG.replace(latent_dim=latent_dim)
    p = init_params(jax.random.PRNGKey(1), config)
    history = [{"epoch": e, "train_loss": 10.0 / e, "val_loss": 11.0 / e, "lr": 1e-3} for e in (1, 2, 3)]
    paths = plots.save_figures(tmp_path, p, config, data[0], data[1], (8, 8), history)
    assert sorted(x.name for x in paths) == sorted(plots.FIGURE_NAMES)
    for path in paths:
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and min(image.shape[:2]) > 50  # a real PNG with content
    assert not [x for x in tmp_path.iterdir() if temp_of(x.name)]  # no temps left
