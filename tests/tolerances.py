"""Every tolerance of the parity suite, in one place (relative errors, norm-wise for arrays).

float32 bounds are those of the issue; float64 bounds show the two packages compute the same
function to rounding, and parameter trajectories stay together over many Adam steps.
"""

PARITY_RTOL = {
    # loss, reconstruction term and KL of one batch
    "loss": {"float32": 1e-5, "float64": 1e-12},
    # the gradient of every parameter (||g_jax - g_torch|| / ||g_torch||)
    "grad": {"float32": 1e-4, "float64": 1e-10},
    # parameters after 50 Adam steps from the same start on the same batches and noise
    "adam_50": {"float32": 1e-5, "float64": 1e-9},
    # the VQ-VAE's EMA codebook, code counts and code sums after a training step (against pythae's buffers)
    "ema_state": {"float32": 1e-5, "float64": 1e-12},
    # train_one_epoch / validate_one_epoch averages against jaxvae's compiled epochs
    "epoch_mean": {"float32": 1e-5, "float64": 1e-12},
    # exported torch modules against jaxvae on shared noise (CLI round trip)
    "export": {"float32": 1e-5},
}

# one quantity computed two ways within jaxvae, equal in exact arithmetic (the beta-TCVAE's three KL
# terms against log q(z | x) - log p(z) they telescope to)
IDENTITY_RTOL = {"float32": 1e-6, "float64": 1e-12}


def rel_err(got, want) -> float:
    """Norm-wise relative error ||got - want|| / ||want|| (absolute when want is zero)."""
    import numpy as np

    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.linalg.norm(want)
    return float(np.linalg.norm(got - want) / (scale if scale > 0 else 1.0))


def assert_close(name: str, got, want, rtol: float) -> None:
    """Fail with the observed error printed next to the bound (JAXVAE_SHOW_ERRORS=1 prints all)."""
    import os

    err = rel_err(got, want)
    if os.environ.get("JAXVAE_SHOW_ERRORS"):
        print(f"\n[parity] {name}: {err:.2e} (bound {rtol:.0e})", end="")
    assert err <= rtol, f"{name}: relative error {err:.3e} exceeds {rtol:.0e}"
