"""The ``jaxvae`` command: train, sweep, evaluate, plot, export and import. argparse -> configs -> modules.

The train flags are generated from the fields of VAEConfig and TrainConfig (one flag per field,
the dataclass default is the flag's default), so defaults live in one place: config.py.
Exit codes: 0 success, 1 training stopped on a non-finite loss, 2 bad input (one line on stderr,
no traceback), 130 interrupted (Ctrl-C).

Modules: ``flags`` (flags, help, configs from arguments), ``console`` (output, progress, Ctrl-C),
``inputs`` (data checks), ``train``, ``sweep``, ``run_tools`` (evaluate, plot, export, import),
``cache`` (the compilation cache) and ``main`` (the parser and the entry point). Nothing here
imports JAX until a command needs it, so ``--help`` and typos answer at once.
"""
from jaxvae.cli.cache import compile_cache_dir, enable_compile_cache
from jaxvae.cli.console import EpochProgress
from jaxvae.cli.flags import FLAG_NAMES, configs_from_args, did_you_mean, flag_of
from jaxvae.cli.main import build_parser, main
from jaxvae.cli.train import default_run_dir

__all__ = ["FLAG_NAMES", "EpochProgress", "build_parser", "compile_cache_dir", "configs_from_args", "default_run_dir",
           "did_you_mean", "enable_compile_cache", "flag_of", "main"]
