"""The names of the files jaxvae writes in a run directory, importable without JAX (the command line's
help names some of them before any command loads JAX)."""
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.msgpack"
EVALUATE_FILE = "evaluate.json"
FIGURES_DIR = "figures"
LOCK_FILE = ".lock"
SWEEP_FILE = "sweep.json"  # a sweep directory's: its models' run directories sit beside it
EXPORT_FILE = "model.pt"  # jaxvae export's default output
TENSORBOARD_DIR = "tensorboard"  # train --tensorboard's event files
# Every name jaxvae writes in a run directory (a set-aside file gets ".bad"): a new run starts only where
# nothing else is, and no command writes where one of these is a symbolic link.
RUN_ENTRIES = frozenset({CONFIG_FILE, CONFIG_FILE + ".bad", METRICS_FILE, CHECKPOINT_FILE, CHECKPOINT_FILE + ".bad",
                         EVALUATE_FILE, FIGURES_DIR, LOCK_FILE, EXPORT_FILE, TENSORBOARD_DIR})
