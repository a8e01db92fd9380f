"""The ``jaxvae`` command: train, sweep, evaluate, plot, export and import. argparse -> configs -> modules.

The train flags are generated from the fields of VAEConfig and TrainConfig, so defaults live in one
place: config.py. Modules: ``flags`` (flags, help, configs), ``console`` (output, progress, Ctrl-C),
``inputs`` (the data to load), ``rundir`` (where commands write, locks, remedies), ``train`` (the flow of
train and sweep), ``sweep`` (its lines), ``run_tools`` (evaluate, plot, export, import), ``cache``
(the compilation cache) and ``main`` (the parser, which imports no JAX, and the exit codes).
"""
from jaxvae.cli.cache import compile_cache_dir, enable_compile_cache
from jaxvae.cli.flags import FLAG_NAMES, configs_from_args, did_you_mean, flag_of
from jaxvae.cli.main import build_parser, main

__all__ = ["FLAG_NAMES", "build_parser", "compile_cache_dir", "configs_from_args", "did_you_mean",
           "enable_compile_cache", "flag_of", "main"]
