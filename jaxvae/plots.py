"""The blog's figures, from params + config + arrays (matplotlib only here, Agg backend).

Images are always the decoder's output (sigmoid means in [0, 1]), never logits. Each function
returns a Figure; ``save_figures`` writes them all as PNGs, atomically.

For ``latent_dim > 2`` the scatter shows the first two latent dimensions and the manifold walks a
grid over those two with every other dimension held at 0 (the prior's mean). For ``latent_dim == 1``
the scatter plots z against the label and the manifold is one row.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from jaxvae.config import VAEConfig
from jaxvae.fileio import check_held, check_replaceable, refuse_symlink, write_owned
from jaxvae.parallel import WRITER
from jaxvae.vae import VAEModel, as_model

matplotlib.use("Agg")  # before pyplot: no display needed, and no GUI toolkit import
import matplotlib.pyplot as plt  # noqa: E402

DPI = 80  # small PNGs that are still readable at a glance

# One compiled call each instead of one per operation (the figures call them a handful of times).
# Any VAE (a VAEConfig's, or your own modules'): its posterior means and its pixel means.
_encode = jax.jit(lambda params, x, model: as_model(model).encode(params, x), static_argnames="model")
_decode = jax.jit(lambda params, z, model: as_model(model).decode(params, z), static_argnames="model")


def _tile(images: np.ndarray, rows: int, cols: int, image_shape, pad: int = 1) -> np.ndarray:
    """rows x cols images (flattened, row-major) as one array with a thin white (0) border."""
    h, w = image_shape
    canvas = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(np.asarray(images)[: rows * cols]):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        canvas[top : top + h, left : left + w] = img.reshape(h, w)
    return canvas


def _image_figure(canvas, figsize, title: str) -> Figure:
    """``canvas`` alone on a figure, without ticks."""
    fig, ax = plt.subplots(figsize=figsize, dpi=DPI)
    ax.imshow(canvas, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set(xticks=[], yticks=[], title=title)
    fig.tight_layout()
    return fig


def _scatter_latents(ax, params, config: VAEConfig | VAEModel, x, labels, size: float = 3) -> None:
    """Latent means of ``x`` on ``ax``, coloured by label: z[0] against z[1] (against the jittered
    label for a 1-D latent space)."""
    mu, _ = _encode(params, jnp.asarray(x), config)
    mu = np.asarray(mu)
    labels = np.asarray(labels)
    ys = mu[:, 1] if config.latent_dim > 1 else labels + np.random.default_rng(0).uniform(-0.3, 0.3, len(labels))
    cmap = plt.get_cmap("tab10")
    for digit in np.unique(labels):
        sel = labels == digit
        ax.scatter(mu[sel, 0], ys[sel], s=size, alpha=0.6, color=cmap(int(digit) % 10), label=str(digit), rasterized=True)


def latent_scatter(params, config: VAEConfig | VAEModel, x, labels) -> Figure:
    """The test set's latent means coloured by digit label (the blog's scatter plot).

    Args:
        params: The model's parameters.
        config: The model's config, or a ``VAEModel``.
        x: The images ``[N, input_dim]``.
        labels: Their digit labels ``[N]``.

    Returns:
        The figure.
    """
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=DPI)
    _scatter_latents(ax, params, config, x, labels)
    ax.set(xlabel="z[0] (mean of q(z|x))", ylabel="z[1]" if config.latent_dim > 1 else "label (jittered)")
    first_two = f" (first 2 of {config.latent_dim} dims)" if config.latent_dim > 2 else ""
    ax.set_title("Latent space of the test set" + first_two)
    ax.legend(title="digit", markerscale=4, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def manifold_grid(config: VAEConfig | VAEModel, n: int = 11, span: float = 2.0) -> np.ndarray:
    """The latent points of the manifold figure, row-major, top row = largest z[1] (as the blog draws it).

    Args:
        config: Gives the latent size (one row of n points when it is 1).
        n: Points per side.
        span: The grid covers [-span, span] in each of the first two latent dims.

    Returns:
        float32 ``[n * n, latent_dim]`` (``[n, 1]`` for one latent dim), the other dims 0.
    """
    values = np.linspace(-span, span, n, dtype=np.float32)
    if config.latent_dim == 1:
        return values[:, None]
    z = np.zeros((n * n, config.latent_dim), np.float32)
    z1, z0 = np.meshgrid(values[::-1], values, indexing="ij")
    z[:, 0], z[:, 1] = z0.ravel(), z1.ravel()
    return z


def manifold(params, config: VAEConfig | VAEModel, image_shape, n: int = 11, span: float = 2.0) -> Figure:
    """Decoder outputs on an n x n grid over [-span, span]^2 of the first two latent dims, as one image.

    Args:
        params: The model's parameters.
        config: The model's config, or a ``VAEModel``.
        image_shape: ``(height, width)`` of one image.
        n: Images per side.
        span: The grid's half-width in latent units.

    Returns:
        The figure.
    """
    z = manifold_grid(config, n, span)
    images = np.asarray(_decode(params, jnp.asarray(z), config))
    rows = 1 if config.latent_dim == 1 else n
    canvas = _tile(images, rows, n, image_shape, pad=0)
    fig, ax = plt.subplots(figsize=(6, 6 * rows / n + 0.6), dpi=DPI)
    ax.imshow(canvas, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest",
              extent=(-span - span / (n - 1), span + span / (n - 1), -span - span / (n - 1), span + span / (n - 1))
              if rows > 1 else None)
    if rows > 1:
        ax.set(xlabel="z[0]", ylabel="z[1]")
    else:
        ax.set_yticks([])
    extra = f", other {config.latent_dim - 2} dims = 0" if config.latent_dim > 2 else ""
    ax.set_title(f"Learned manifold: decoder on a {n}x{rows} grid over [-{span:g}, {span:g}]"
                 + ("^2" if rows > 1 else "") + extra)
    fig.tight_layout()
    return fig


def loss_curves(history: list[dict]) -> Figure:
    """Training and validation loss per epoch (log scale) with the learning rate on a twin axis.

    Args:
        history: The run's records (``epoch``, ``train_loss``, ``val_loss``, ``lr``).

    Returns:
        The figure.
    """
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=DPI)
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", ms=3, label="train loss")
    ax.plot(epochs, [r["val_loss"] for r in history], "s-", ms=3, label="validation loss")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 5.2, not 5.2x10^0, on a short log axis
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="loss (recon + KL), log scale")
    lr_ax = ax.twinx()
    lr_ax.plot(epochs, [r["lr"] for r in history], "--", color="tab:gray", label="learning rate")
    lr_ax.set(yscale="log", ylabel="learning rate")
    lines = ax.get_lines() + lr_ax.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="upper right")
    ax.set_title("Loss curves")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def reconstructions(params, config: VAEConfig | VAEModel, x, image_shape, n: int = 12) -> Figure:
    """The first ``n`` inputs (top row) and their reconstructions decode(mu) (bottom row).

    Args:
        params: The model's parameters.
        config: The model's config, or a ``VAEModel``.
        x: The images ``[N, input_dim]``.
        image_shape: ``(height, width)`` of one image.
        n: How many.

    Returns:
        The figure.
    """
    x = np.asarray(x)[:n]
    mu, _ = _encode(params, jnp.asarray(x), config)
    return image_pairs(x, np.asarray(_decode(params, mu, config)), image_shape, "decode(mu)")


def image_pairs(x, x_hat, image_shape, what: str) -> Figure:
    """Inputs (top row) above their reconstructions (bottom row).

    Args:
        x: The inputs ``[n, input_dim]``.
        x_hat: Their reconstructions, as ``x``.
        image_shape: ``(height, width)`` of one image.
        what: How the reconstructions were made, for the title (``"decode(mu)"``).

    Returns:
        The figure.
    """
    canvas = _tile(np.concatenate([np.asarray(x), np.asarray(x_hat)]), 2, len(x), image_shape)
    return _image_figure(canvas, (0.6 * len(x) + 0.4, 1.8), f"Inputs (top) and reconstructions {what} (bottom)")


def prior_samples(params, config: VAEConfig | VAEModel, image_shape, key: jax.Array, n: int = 8) -> Figure:
    """Decoder means of n x n latent codes drawn from the prior N(0, I).

    Args:
        params: The model's parameters.
        config: The model's config, or a ``VAEModel``.
        image_shape: ``(height, width)`` of one image.
        key: Draws the codes.
        n: Images per side.

    Returns:
        The figure.
    """
    z = jax.random.normal(key, (n * n, config.latent_dim))
    images = np.asarray(_decode(params, z, config))
    return _image_figure(_tile(images, n, n, image_shape), (4.5, 4.8), "Samples: decoder(z), z ~ N(0, I)")


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """PNG at the figure's dpi, written atomically, and only where nothing or a figure jaxvae wrote is
    (``fileio.write_owned``); the figure is closed. Only the writing process writes
    (``jaxvae.parallel.WRITER``).

    Args:
        fig: The figure.
        path: The PNG file.

    Returns:
        ``path``.

    Raises:
        jaxvae.fileio.NotOwnedError: A file at ``path`` that jaxvae did not write.
    """
    def write():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=fig.dpi)
        write_owned(path, buffer.getvalue())

    WRITER(write)
    plt.close(fig)
    return Path(path)


# The figures of a run of the blog's VAE (``VAEModel.figures`` and the loss curves).
FIGURE_NAMES = ("latent_scatter.png", "manifold.png", "loss_curves.png", "reconstructions.png", "samples.png")


def _save_all(directory: str | os.PathLike, names, make_figures) -> list[Path]:
    """Save ``make_figures()`` (None: skipped) as ``names`` in ``directory``, on the writing process only;
    every name is checked first (``fileio.check_replaceable``), so that a refusal writes none of them."""
    if not WRITER.active:
        return []
    directory = Path(directory)
    refuse_symlink(directory)  # a linked figures folder would put them into someone else's
    check_held(directory / names[0])
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        check_replaceable(directory / name)
    return [save_figure(fig, directory / name) for fig, name in zip(make_figures(), names) if fig is not None]


def save_figures(directory: str | os.PathLike, params, config: VAEConfig | VAEModel, test_x, test_y, image_shape,
                 history: list[dict], seed: int = 0, model_state=()) -> list[Path]:
    """Every figure of a run into ``directory`` (created); returns the paths written (none on a
    process other than 0 of a multi-process run).

    The model draws its own figures (``Model.figures``: the VAE's latent scatter, manifold,
    reconstructions and prior samples; the conditional VAE's samples per class); every model's run gets
    its loss curves. Every name is checked before any is written, so a refusal writes none of them.

    Args:
        directory: The figures directory.
        params: The model's parameters.
        config: The model's config, or a ``VAEModel``.
        test_x: The test images ``[N, input_dim]``.
        test_y: Their labels.
        image_shape: ``(height, width)`` of one image.
        history: The run's records; empty for no loss curves.
        seed: Draws the prior samples.
        model_state: The model's own state (``()`` for most models).

    Returns:
        The paths written.

    Raises:
        jaxvae.fileio.NotOwnedError: A figure's path holds a file that jaxvae did not write.
    """
    if not WRITER.active:  # the figures are not even drawn
        return []
    figures = as_model(config).figures(params, model_state, test_x, test_y, image_shape, jax.random.PRNGKey(seed))
    if history:
        figures["loss_curves.png"] = loss_curves(history)
    names = list(figures)
    try:
        return _save_all(directory, names, lambda: [figures[name] for name in names]) if names else []
    finally:  # a refused name writes none of them: close the figures drawn (save_figure closes those it wrote)
        for fig in figures.values():
            plt.close(fig)


def vae_figures(params, model, test_x, test_y, image_shape, key: jax.Array) -> dict:
    """The blog's figures of a VAE whose encoder reads x alone: its latent scatter, manifold,
    reconstructions and prior samples (``VAEModel.figures``).

    Args:
        params: The model's parameters.
        model: The model, or its config.
        test_x: The test images.
        test_y: Their labels.
        image_shape: ``(height, width)`` of one image.
        key: Draws the prior samples.

    Returns:
        The figures by file name.
    """
    return {"latent_scatter.png": latent_scatter(params, model, test_x, test_y),
            "manifold.png": manifold(params, model, image_shape),
            "reconstructions.png": reconstructions(params, model, test_x, image_shape),
            "samples.png": prior_samples(params, model, image_shape, key)}


def class_samples(params, model, image_shape, key: jax.Array, per_class: int = 10) -> Figure:
    """Images a conditional model generates for each class, one row per class: ``model.sample(params,
    key, y)`` with z drawn from the prior.

    Args:
        params: The model's parameters.
        model: A model with ``num_classes`` and ``sample``.
        image_shape: ``(height, width)`` of one image.
        key: Draws the codes.
        per_class: Images per row.

    Returns:
        The figure.
    """
    y = np.repeat(np.arange(model.num_classes), per_class)
    images = np.asarray(model.sample(params, key, y))
    rows = model.num_classes
    return _image_figure(_tile(images, rows, per_class, image_shape), (0.45 * per_class + 0.5, 0.45 * rows + 0.8),
                         "Samples per class: decoder(z, y), z ~ N(0, I)")


def draws_latents(model) -> bool:
    """Whether a sweep's latent figures (the scatters, the rate against the distortion) can be drawn
    for ``model``: a VAE whose encoder reads x alone (a ``VAEConfig``'s, or your own modules').

    Args:
        model: A ``VAEConfig`` or a ``jaxvae.model.Model``.

    Returns:
        True for the VAE family's unconditional models.
    """
    return type(as_model(model)) is VAEModel


# --------------------------------------------------------------------------- sweeps (jaxvae.sweep)
# These draw from ``jaxvae.sweep.summarize``'s JSON form: its "settings" (each with a "label", the
# names of its "models" and those that "failed") and "models" (aligned with the histories given).


def _setting_members(summary: dict) -> list[tuple[dict, list[int], set[int]]]:
    """Per setting: (entry, the indices of its models in order, those of the models stopped by a
    non-finite epoch)."""
    index = {row["name"]: i for i, row in enumerate(summary["models"])}
    return [(entry, [index[n] for n in entry["models"]], {index[n] for n in entry["failed"]})
            for entry in summary["settings"]]


def sweep_loss_curves(summary: dict, histories: list[list[dict]], cols: int = 4) -> Figure:
    """Training and validation loss per epoch, one panel per setting (each with its own scale, so
    that the seed spread shows): the mean over its seeds (line) and their range, min to max (band).
    Models stopped by a non-finite epoch are left out (the panel's title counts them).

    Args:
        summary: ``jaxvae.sweep.summarize``'s data.
        histories: Each model's records, in the summary's order.
        cols: Panels per row, at most.

    Returns:
        The figure.
    """
    groups = _setting_members(summary)
    cols = min(cols, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.7 * cols, 2.8 * rows + 0.5), dpi=DPI, squeeze=False)
    for ax, (entry, members, failed) in zip(axes.flat, groups):
        runs = [histories[i] for i in members if i not in failed and histories[i]]
        ax.set_title(entry["label"] + (f" ({len(failed)} failed, left out)" if failed else ""), fontsize="medium")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if not runs:
            continue
        epochs = np.arange(1, max(len(h) for h in runs) + 1)
        for key, style, color in (("train_loss", "--", "tab:blue"), ("val_loss", "-", "tab:orange")):
            per_epoch = [[h[e - 1][key] for h in runs if len(h) >= e] for e in epochs]
            ax.plot(epochs, [np.mean(v) for v in per_epoch], style, color=color, label=key.replace("_", " "))
            ax.fill_between(epochs, [min(v) for v in per_epoch], [max(v) for v in per_epoch], color=color, alpha=0.3,
                            linewidth=0)
    for ax in axes.flat[len(groups):]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize="small")
    seeds = max(len(entry["models"]) for entry, _, _ in groups)
    fig.suptitle(f"Loss (recon + KL weight x KL) per epoch: mean over {seeds} seed{'s' * (seeds > 1)} (line), "
                 "min to max (band)")
    fig.tight_layout()
    return fig


def sweep_rate_distortion(summary: dict) -> Figure:
    """The final validation reconstruction error against the KL (the rate), one small point per
    model and per setting the mean over its seeds with one sd as error bars, the settings joined in
    sweep order. For the Gaussian the error is the sum of squared errors per image, 2 sigma^2 times the
    recon term, so that every sigma is on one scale; for the Bernoulli, the recon term -log p(x|z).

    Args:
        summary: ``jaxvae.sweep.summarize``'s data.

    Returns:
        The figure.
    """
    gaussian = "val_squared_error" in summary["settings"][0]  # the sweep's models read a sigma
    metric = "val_squared_error" if gaussian else "val_recon"
    rows = summary["models"]
    groups = _setting_members(summary)
    n = len(groups)
    cmap = plt.get_cmap("viridis" if n > 10 else "tab10")
    colors = [cmap(i / max(n - 1, 1)) if n > 10 else cmap(i) for i in range(n)]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=DPI)
    means = []
    for (entry, members, failed), color in zip(groups, colors):
        points = [(rows[i]["final"]["val_kl"], rows[i][metric] if gaussian else rows[i]["final"]["val_recon"])
                  for i in members if i not in failed and rows[i]["final"]]
        if not points:
            continue
        kl, err = np.asarray(points).T
        ax.scatter(kl, err, s=12, color=color, alpha=0.5, zorder=2)
        sd = [entry[m]["sd"] or 0.0 for m in ("val_kl", metric)]
        ax.errorbar(kl.mean(), err.mean(), xerr=sd[0], yerr=sd[1], fmt="o", ms=7, color=color, capsize=3, zorder=3,
                    label=entry["label"] + (f" ({len(failed)} failed, left out)" if failed else ""))
        means.append((kl.mean(), err.mean()))
    if len(means) > 1:
        ax.plot(*np.asarray(means).T, "-", color="tab:gray", lw=1, zorder=1)
    ax.set_xlabel("rate: KL(q(z|x) || p(z)) per image, nats (validation)")
    ax.set_ylabel("distortion: sum of squared errors per image\n(= 2 sigma^2 x recon term)" if gaussian
                  else "distortion: -log p(x|z) per image, nats")
    ax.set_title("Rate and distortion after the last epoch\n(small points: models; markers: mean +- sd over seeds)",
                 fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def sweep_latent_scatters(summary: dict, params: list, config: VAEConfig | VAEModel, x, labels, max_seeds: int = 4,
                          max_points: int = 5000) -> Figure:
    """The latent means of ``x`` for each model, side by side: one column per setting, one row per
    seed. A model stopped by a non-finite epoch shows its last good state, titled so.

    Args:
        summary: ``jaxvae.sweep.summarize``'s data.
        params: ``params[i]`` belongs to ``summary["models"][i]``.
        config: The architecture every model shares.
        x: The images.
        labels: Their digit labels.
        max_seeds: Rows: the first seeds of each setting.
        max_points: Only the first rows of ``x`` are drawn.

    Returns:
        The figure.
    """
    x, labels = np.asarray(x)[:max_points], np.asarray(labels)[:max_points]
    groups = _setting_members(summary)
    rows = min(max_seeds, max(len(entry["models"]) for entry, _, _ in groups))
    cols = len(groups)
    fig, axes = plt.subplots(rows, cols, figsize=(2.7 * cols + 0.9, 2.5 * rows + 0.5), dpi=DPI, squeeze=False)
    for c, (entry, members, _) in enumerate(groups):
        for r in range(rows):
            ax = axes[r][c]
            ax.set(xticks=[], yticks=[])
            if r >= len(members):
                ax.set_axis_off()
                continue
            i = members[r]
            row = summary["models"][i]
            _scatter_latents(ax, params[i], config, x, labels, size=1)
            ax.set_title(f"{entry['label']}, seed {row['seed']}" + (" (failed)" if row["error"] else ""),
                         fontsize="small")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, title="digit", markerscale=4, loc="center right", frameon=False)
    fig.suptitle("Latent means of the test set, z[0] across, z[1] up" +
                 (f" (first 2 of {config.latent_dim} dims)" if config.latent_dim > 2 else ""))
    fig.tight_layout(rect=(0, 0, 1 - 0.7 / (2.7 * cols + 0.9), 1))
    return fig


SWEEP_FIGURE_NAMES = ("sweep_loss_curves.png", "sweep_rate_distortion.png", "sweep_latents.png")


def save_sweep_figures(directory: str | os.PathLike, summary: dict, histories: list[list[dict]], params: list,
                       config: VAEConfig | VAEModel, test_x, test_y) -> list[Path]:
    """The sweep's figures into ``directory`` (created); returns the paths written (none on a
    process other than 0 of a multi-process run).

    Args:
        directory: The figures directory.
        summary: ``jaxvae.sweep.summarize``'s data.
        histories: Each model's records.
        params: Each model's parameters.
        config: The architecture every model shares.
        test_x: The test images.
        test_y: Their labels.

    Returns:
        The paths written.

    Raises:
        jaxvae.fileio.NotOwnedError: A figure's path holds a file that jaxvae did not write.
    """
    vae = draws_latents(config)
    return _save_all(directory, SWEEP_FIGURE_NAMES, lambda: (
        sweep_loss_curves(summary, histories), sweep_rate_distortion(summary) if vae else None,
        sweep_latent_scatters(summary, params, config, test_x, test_y) if vae else None))

