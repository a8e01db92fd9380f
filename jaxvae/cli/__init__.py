"""The ``jaxvae`` command: train, sweep, evaluate, plot, export and import. argparse -> configs -> modules.

The train flags are generated from the fields of VAEConfig and TrainConfig (one flag per field,
the dataclass default is the flag's default), so defaults live in one place: config.py.
Exit codes: 0 success, 1 training stopped on a non-finite loss, 2 bad input (one line on stderr,
no traceback), 130 interrupted (Ctrl-C).

Modules: ``flags`` (flags, help, configs from arguments), ``console`` (output, progress, Ctrl-C),
``inputs`` (data checks), ``rundir`` (where commands write, locks, remedies), ``train`` (the one
flow of train and sweep), ``sweep`` (the sweep's flags and lines), ``run_tools`` (evaluate, plot,
export, import), ``cache`` (the compilation cache) and ``main`` (the parser and the entry point).
Building the parser imports no JAX (the commands' modules load when a command runs), so ``--help``
and typos answer at once.
"""
from jaxvae.cli.cache import compile_cache_dir, enable_compile_cache
from jaxvae.cli.flags import FLAG_NAMES, configs_from_args, did_you_mean, flag_of
from jaxvae.cli.main import build_parser, main

__all__ = ["FLAG_NAMES", "build_parser", "compile_cache_dir", "configs_from_args", "did_you_mean",
           "enable_compile_cache", "flag_of", "main"]
