"""``jaxvae sweep --cores``: one single-threaded JAX CPU device per core (``auto``: where the machine
has no accelerator and the models divide among them), decided from the parsed flags and set in
``XLA_FLAGS`` before JAX is loaded (imports no JAX). The default, 1, keeps one device: on a 2-core
AMD EPYC VM two single-threaded devices trained two Burda models (batch 20) 1.14x as fast, but two
blog VAEs (batch 128) no faster, 0.98x (``benchmarks/results/host_cores_*.md``)."""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import math
import os
import sys
from typing import Mapping

from jaxvae.cli.flags import SWEEP_VALUE_FLAGS
from jaxvae.xla_flags import cpu_cores, host_device_count, names_flag_file, with_host_devices

# Installed PJRT plugins or TPU runtimes: a machine with one may have an accelerator.
ACCELERATOR_MODULES = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")


def cores_type(text: str) -> str | int:
    """--cores's value: "auto" or a positive integer (argparse's ``type``)."""
    if text == "auto":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"give auto or a number of devices (1: one device using every core), got {text!r}")


def sweep_model_count(args) -> int | None:
    """The models of a new sweep, from its flags (seeds times each value flag's values); None for
    ``--resume``, whose models its sweep file records."""
    if getattr(args, "resume", None):
        return None
    seeds = getattr(args, "seeds", None) or 1
    return seeds * math.prod(len(getattr(args, f"sweep_{name}", None) or ()) or 1 for name in SWEEP_VALUE_FLAGS)


def may_have_accelerator(environ: Mapping[str, str]) -> bool:
    """Whether JAX might find a GPU or TPU: ``JAX_PLATFORMS`` names another platform than cpu, or
    (unset) an accelerator plugin is installed."""
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return any(p.strip() != "cpu" for p in platforms.split(","))
    if any(importlib.util.find_spec(name) is not None for name in ACCELERATOR_MODULES):
        return True
    return bool(importlib.metadata.entry_points(group="jax_plugins"))


def host_devices(cores: str | int, mesh: str, n_models: int | None, n_cores: int, environ: Mapping[str, str],
                 accelerator: bool) -> int | None:
    """The CPU devices a sweep should get, or None to leave JAX's default (one multi-threaded device).

    ``--cores auto`` (with ``--mesh auto``, 2 or more models, 2 or more cores, no accelerator, no
    device count in the user's ``XLA_FLAGS`` and no file of flags there): the most devices, up to one
    per core and per model, whose number divides the models, so that each device trains its share of
    them; none when that is 1 (3 models on 2 cores). ``--cores 1`` (the default): never. ``--cores N``:
    N devices, whatever the rest.

    Args:
        cores: --cores: "auto" or a count.
        mesh: --mesh.
        n_models: The sweep's models; None when unknown (a resumed sweep).
        n_cores: The cores this process may use.
        environ: The environment (``XLA_FLAGS``, ``JAX_PLATFORMS``).
        accelerator: Whether JAX might find a GPU or TPU (``may_have_accelerator``).

    Returns:
        The device count to set, or None.
    """
    if cores != "auto":
        return cores if cores > 1 else None
    if mesh != "auto" or not n_models or n_models < 2 or n_cores < 2 or accelerator:
        return None
    flags = environ.get("XLA_FLAGS")
    if host_device_count(flags) is not None or names_flag_file(flags):  # the user's own count or file: theirs
        return None
    count = max(d for d in range(1, min(n_cores, n_models) + 1) if n_models % d == 0)
    return count if count > 1 else None


def apply_host_cores(args, environ=os.environ) -> int | None:
    """Set ``XLA_FLAGS`` for ``jaxvae sweep``'s --cores (``host_devices``), before JAX is loaded; a
    process that has loaded JAX already (a test calling ``cli.main``) is left as it is.

    Args:
        args: The parsed flags of the sweep.
        environ: The environment to change.

    Returns:
        The device count set, or None.
    """
    if args.command != "sweep" or "jax" in sys.modules:
        return None
    cores = getattr(args, "cores", 1)
    count = host_devices(cores, getattr(args, "mesh", "auto"), sweep_model_count(args), cpu_cores(), environ,
                         cores == "auto" and may_have_accelerator(environ))
    if count is not None:
        environ["XLA_FLAGS"] = with_host_devices(environ.get("XLA_FLAGS"), count)
    return count
