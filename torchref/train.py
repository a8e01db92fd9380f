"""The blog's epoch loops and its full MNIST training run (``python -m torchref.train``)."""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.data import DataLoader

from .data import AutoencoderDataset, load_mnist
from .losses import GaussSimilarityLoss, UnitGaussKullbackLeiblerDivergenceLoss
from .models import build_blog_model

__all__ = ["train_one_epoch", "validate_one_epoch", "train_blog", "main"]

MIN_LR = 1e-6  # the blog stops before an epoch whose learning rate is below this


def _next_eps(noise_iter, i_batch):
    try:
        return next(noise_iter)
    except StopIteration:
        raise ValueError(f"noise ran out at batch {i_batch}: give one eps per batch") from None


def _run_batch(encoder_model, distrib_model, decoder_model, inputs, targets, data_loss_func,
               distrib_loss_rate, distrib_loss_func, noise_iter, i_batch, device):
    params = encoder_model(inputs)  # latent Gaussian parameters (mu, sigma)
    if noise_iter is None:
        codes = distrib_model(params)
    else:
        eps = _next_eps(noise_iter, i_batch)
        if device:
            eps = torch.as_tensor(eps).to(device)
        codes = distrib_model(params, eps)
    preds = decoder_model(codes)
    data_loss = data_loss_func(preds, targets)
    distrib_loss = 0
    if distrib_loss_func is not None:
        distrib_loss = distrib_loss_func(params)
    return data_loss + distrib_loss_rate * distrib_loss


def train_one_epoch(
    encoder_model,
    distrib_model,
    decoder_model,
    train_loader,
    data_loss_func,
    optimizer,
    distrib_loss_rate=0,
    distrib_loss_func=None,
    device=None,
    *,
    noise=None,
    verbose=True,
):
    """Train for one pass over ``train_loader``; return the unweighted mean of batch losses.

    Loss per batch is ``data_loss_func(preds, targets) + distrib_loss_rate * distrib_loss_func(
    params)``, as in the blog. ``noise`` (optional) yields one eps per batch, passed as
    ``distrib_model(params, eps)``; ``verbose=False`` silences the blog's prints.
    """
    encoder_model.train(True)
    decoder_model.train(True)
    distrib_model.train(True)
    noise_iter = None if noise is None else iter(noise)
    tot_loss, nof_batches = 0.0, 0
    for i_batch, (inputs, targets) in enumerate(train_loader):
        if device:
            inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        loss = _run_batch(encoder_model, distrib_model, decoder_model, inputs, targets,
                          data_loss_func, distrib_loss_rate, distrib_loss_func, noise_iter,
                          i_batch, device)
        loss.backward()
        optimizer.step()
        tot_loss += loss.item()
        nof_batches += 1
        if verbose and i_batch % 100 == 0:
            print(f"batch {i_batch} loss: {tot_loss / nof_batches: >8f}")
    if nof_batches == 0:
        raise ValueError("train_loader yielded no batches")
    avg_loss = tot_loss / nof_batches
    if verbose:
        print(f"Train: Avg loss: {avg_loss:>8f}")
    return avg_loss


def validate_one_epoch(
    encoder_model,
    distrib_model,
    decoder_model,
    validate_loader,
    data_loss_func,
    distrib_loss_rate=0,
    distrib_loss_func=None,
    device=None,
    *,
    noise=None,
    verbose=True,
):
    """Evaluate one pass over ``validate_loader`` in eval mode; return the mean batch loss.

    Latent codes are still sampled, as in the blog. Runs under ``torch.no_grad()`` (the blog
    does not; this saves memory and changes no numbers). ``noise``/``verbose`` as in
    :func:`train_one_epoch`.
    """
    encoder_model.eval()
    decoder_model.eval()
    distrib_model.eval()
    noise_iter = None if noise is None else iter(noise)
    tot_loss, nof_batches = 0.0, 0
    with torch.no_grad():
        for i_batch, (inputs, targets) in enumerate(validate_loader):
            if device:
                inputs, targets = inputs.to(device), targets.to(device)
            loss = _run_batch(encoder_model, distrib_model, decoder_model, inputs, targets,
                              data_loss_func, distrib_loss_rate, distrib_loss_func, noise_iter,
                              i_batch, device)
            tot_loss += loss.item()
            nof_batches += 1
            if verbose and i_batch % 100 == 0:
                print(f"batch {i_batch} loss: {tot_loss / nof_batches: >8f}")
    if nof_batches == 0:
        raise ValueError("validate_loader yielded no batches")
    avg_loss = tot_loss / nof_batches
    if verbose:
        print(f"Validate: Avg loss: {avg_loss:>8f}")
    return avg_loss


def train_blog(
    train_data=None,
    val_data=None,
    *,
    epochs=100,
    batch_size=128,
    lr=1e-3,
    seed=0,
    device=None,
    verbose=True,
    data_dir=None,
    latent_dim=2,
    return_models=False,
):
    """The blog notebook's training run; returns a history dict of per-epoch lists.

    ``train_data``/``val_data``: arrays (N, 784) or (N, 28, 28), float32 in [0, 1] (uint8 is
    scaled by 1/255). If both are None, MNIST train/test are loaded via :func:`load_mnist`
    from ``data_dir``. Adam(lr), ReduceLROnPlateau(min, 0.1, patience 10, threshold 1e-4) on the
    validation loss, at most ``epochs`` epochs, stopping before an epoch whose lr < 1e-6.
    History keys: ``epoch, lr, train_loss, val_loss, seconds, val_seconds`` (lr is the one the
    epoch used; ``seconds`` times the training pass, ``val_seconds`` the validation pass).
    With ``return_models=True`` returns ``(history, (encoder, distrib_sample, decoder))``.
    """
    if (train_data is None) != (val_data is None):
        raise ValueError("pass both train_data and val_data, or neither (to load MNIST)")
    if train_data is None:
        mnist = load_mnist(data_dir)
        train_data, val_data = mnist["train_images"], mnist["test_images"]
    torch.manual_seed(seed)  # one seed fixes the init, the shuffles and the latent noise
    train_set, val_set = AutoencoderDataset(train_data), AutoencoderDataset(val_data)
    if train_set.data.shape[1] != val_set.data.shape[1]:
        raise ValueError("train_data and val_data have different feature counts")
    nof_features = train_set.data.shape[1]
    encoder, distrib_sample, decoder = build_blog_model(nof_features, latent_dim)
    if device:
        encoder, distrib_sample, decoder = encoder.to(device), distrib_sample.to(device), decoder.to(device)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=batch_size, shuffle=True)
    data_loss_func = GaussSimilarityLoss(gauss_sigma=1.0)
    distrib_loss_func = UnitGaussKullbackLeiblerDivergenceLoss()
    if device:
        data_loss_func = data_loss_func.to(device)
    params = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4
    )
    history = {"epoch": [], "lr": [], "train_loss": [], "val_loss": [], "seconds": [],
               "val_seconds": []}
    for epoch in range(epochs):
        cur_lr = optimizer.param_groups[0]["lr"]
        if cur_lr < MIN_LR:
            break
        if verbose:
            print(f"Epoch {epoch + 1} (lr {cur_lr:g})")
        start = time.perf_counter()
        train_loss = train_one_epoch(
            encoder, distrib_sample, decoder, train_loader, data_loss_func, optimizer,
            distrib_loss_rate=1, distrib_loss_func=distrib_loss_func, device=device,
            verbose=verbose,
        )
        seconds = time.perf_counter() - start  # training pass only
        start = time.perf_counter()
        val_loss = validate_one_epoch(
            encoder, distrib_sample, decoder, val_loader, data_loss_func,
            distrib_loss_rate=1, distrib_loss_func=distrib_loss_func, device=device,
            verbose=verbose,
        )
        val_seconds = time.perf_counter() - start
        scheduler.step(val_loss)
        row = (epoch + 1, cur_lr, train_loss, val_loss, seconds, val_seconds)
        for key, value in zip(history, row):
            history[key].append(value)
    if return_models:
        return history, (encoder, distrib_sample, decoder)
    return history


def main(argv=None):
    """Command-line entry point: train the blog's VAE on MNIST and print the history as JSON."""
    parser = argparse.ArgumentParser(prog="python -m torchref.train", description=__doc__)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None,
                        help="directory with the 4 MNIST IDX files (gzip or raw)")
    parser.add_argument("--device", default=None, help="e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--history", default=None, help="write the history JSON to this file")
    parser.add_argument("--quiet", action="store_true", help="no per-batch/epoch prints")
    args = parser.parse_args(argv)
    try:
        history = train_blog(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            device=args.device, verbose=not args.quiet, data_dir=args.data_dir,
        )
    except (FileNotFoundError, ValueError) as err:
        # data problems are user errors: one line, no traceback
        parser.exit(2, f"error: {err}\n")
    text = json.dumps(history, indent=1)
    if args.history:
        with open(args.history, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
