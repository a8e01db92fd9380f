"""Shared fixtures: tiny, deterministic data that looks like what the model sees."""
import os

import numpy as np
import pytest

# cli.main turns on JAX's persistent compilation cache in the user's cache directory; tests that call it
# must neither write there nor depend on what an earlier run left (tests/test_cli_cache.py tests the cache).
os.environ.setdefault("JAXVAE_NO_COMPILE_CACHE", "1")


def digit_like_batch(n: int, seed: int = 0, side: int = 28) -> np.ndarray:
    """Images of anti-aliased random strokes and rings in [0, 1], flattened: MNIST-like statistics
    (mostly black, bright thin strokes) without needing MNIST."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    images = np.zeros((n, side, side))
    for img in images:
        for _ in range(rng.integers(1, 4)):
            if rng.random() < 0.5:  # a stroke: distance to a segment
                p, q = rng.uniform(4, side - 4, 2), rng.uniform(4, side - 4, 2)
                d = q - p
                t = np.clip(((xx - p[0]) * d[0] + (yy - p[1]) * d[1]) / max(d @ d, 1e-9), 0, 1)
                dist = np.hypot(xx - p[0] - t * d[0], yy - p[1] - t * d[1])
            else:  # a ring
                c, r = rng.uniform(9, side - 9, 2), rng.uniform(3, 7)
                dist = np.abs(np.hypot(xx - c[0], yy - c[1]) - r)
            img[:] = np.maximum(img, np.clip(1.6 - dist, 0, 1))
    return images.reshape(n, side * side)


@pytest.fixture
def digit_like():
    return digit_like_batch
