"""The lines ``jaxvae train`` and ``jaxvae sweep`` print per epoch, and a sweep's closing table (the
flow is ``cli.train``; the sweep's flags are built with the parser, ``cli.main``)."""
from __future__ import annotations

import numpy as np

from jaxvae.sweep import SweepModel, setting_label, varying_values


def val_metrics(record: dict) -> str:
    """`` (recon 12.3456, KL 3.4567)``: a record's validation metrics besides the loss, in the model's
    order; "" for a model that reports none.

    Args:
        record: An epoch's record.

    Returns:
        The text, with its leading space.
    """
    parts = ", ".join(f"{'KL' if k == 'val_kl' else k[4:]} {v:.4f}" for k, v in record.items()
                      if k.startswith("val_") and k != "val_loss")
    return f" ({parts})" if parts else ""


def epoch_line(records: list, models: list[SweepModel], max_epochs: int) -> str | None:
    """The line printed after an epoch: a lone model's losses, or for a sweep each setting's mean
    validation loss over its seeds (a loss compares only within a setting: sigma rescales it).

    Args:
        records: Model i's history record for the epoch at index i; None for a model that did not train it.
        models: A sweep's models; empty for a lone run.
        max_epochs: The epoch limit, shown as the denominator.

    Returns:
        The line, or None when no model trained the epoch.
    """
    done = [(i, r) for i, r in enumerate(records) if r is not None]
    if not done:
        return None
    if not models:
        record = done[0][1]
        return (f"epoch {record['epoch']:>3}/{max_epochs}  train loss {record['train_loss']:.4f}  "
                f"val loss {record['val_loss']:.4f}{val_metrics(record)}  "
                f"lr {record['lr']:.1e}  {record['seconds']:.1f}s")
    varying = varying_values(models)
    by_setting: dict[tuple, list[float]] = {}
    for i, record in done:
        by_setting.setdefault(models[i].setting, []).append(record["val_loss"])
    cells = []
    for setting, losses in by_setting.items():
        label = setting_label(dict(zip(models[0].hyper, setting)), varying, models[0].declared)
        spread = f" +- {np.std(losses, ddof=1):.3f}" if len(losses) > 1 else ""
        cells.append(f"{label}: {np.mean(losses):.3f}{spread}")
    epoch = max(r["epoch"] for _, r in done)
    return (f"epoch {epoch:>3}/{max_epochs}  {len(done)} model{'s' * (len(done) > 1)}  val loss (mean over seeds) "
            f"{'; '.join(cells)}  {done[0][1]['seconds']:.1f}s")


def settings_table(summary: dict) -> list[str]:
    """The closing table: per setting each final validation metric (the VAE's loss, recon and KL),
    mean +- sd over its seeds.

    Args:
        summary: The sweep's summary (``sweep.summarize``).

    Returns:
        The table's lines, the header first.
    """
    def cell(stats):
        if not stats or not stats["n"]:  # no model of the setting trained an epoch
            return f"{'-':>20}"
        sd = f" +- {stats['sd']:.4f}" if stats["sd"] is not None else ""
        return f"{stats['mean']:>10.4f}{sd:<10}"

    metrics = [k for k in summary["settings"][0] if k.startswith("val_") and k != "val_squared_error"]
    names = "".join(f"{'val loss' if k == 'val_loss' else 'KL' if k == 'val_kl' else k[4:]:>20}" for k in metrics)
    lines = [f"{'setting':<24}{names}   (mean +- sd over seeds, last epoch)"]
    for entry in summary["settings"]:
        failed = f"  ({len(entry['failed'])} failed: {', '.join(entry['failed'])})" if entry["failed"] else ""
        lines.append(f"{entry['label']:<24}{''.join(cell(entry.get(k)) for k in metrics)}{failed}")
    return lines
