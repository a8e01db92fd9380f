"""Flax's VAE example against the same model in jaxvae, trained side by side on the same binary data.

The example (flax/examples/vae): a 784-500-20 ReLU encoder with a mean and a log-variance head, a
mirrored decoder giving logits, Flax's default init (lecun-normal kernels, zero biases), Adam at
1e-3, batch 128, and the loss "summed binary cross-entropy + KL, averaged over the batch". It is
written out below in Flax Linen, as that example writes it; jaxvae trains
``VAEConfig(hidden=(500,), latent_dim=20, activation="relu", likelihood="bernoulli", init=...)``.

Both see the same images: MNIST binarised once by ``jaxvae.binarize.fixed_binarization`` (training
images from seed 0, test images from seed 1). After each run the script prints the test loss the
example reports, the negative ELBO from one sample per image over the whole test split, and writes
every run and the mean and spread per setting to ``--out`` (JSON).

    python experiments/from_flax.py --data-dir DIR               # 10 epochs, seeds 0-2: minutes on a CPU
    python experiments/from_flax.py --dataset digits --epochs 1  # smoke test
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvae import TrainConfig, VAEConfig, fit
from jaxvae.binarize import fixed_binarization
from jaxvae.data import load_dataset


class Encoder(nn.Module):
    latents: int

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(500, name="fc1")(x))
        return nn.Dense(self.latents, name="fc2_mean")(h), nn.Dense(self.latents, name="fc2_logvar")(h)


class Decoder(nn.Module):
    features: int  # 784 for MNIST

    @nn.compact
    def __call__(self, z):
        return nn.Dense(self.features, name="fc2")(nn.relu(nn.Dense(500, name="fc1")(z)))


class FlaxExampleVAE(nn.Module):
    features: int = 784
    latents: int = 20

    def setup(self):
        self.encoder, self.decoder = Encoder(self.latents), Decoder(self.features)

    def __call__(self, x, key):
        mean, logvar = self.encoder(x)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, logvar.shape)
        return self.decoder(z), mean, logvar


def example_loss(logits, x, mean, logvar):
    """The example's loss: Bernoulli cross-entropy summed over pixels plus the KL, batch mean."""
    bce = -jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), axis=-1)
    kld = -0.5 * jnp.sum(1 + logvar - jnp.square(mean) - jnp.exp(logvar), axis=-1)
    return jnp.mean(bce + kld)


def train_flax_example(train_x, test_x, seed: int, epochs: int, batch_size: int = 128) -> float:
    model = FlaxExampleVAE(features=train_x.shape[1])
    init_key, key = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init(init_key, train_x[:1], key)["params"]
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    def loss_of(params, x, key):
        logits, mean, logvar = model.apply({"params": params}, x, key)
        return example_loss(logits, x, mean, logvar)

    @jax.jit
    def step(params, opt_state, x, key):
        grads = jax.grad(loss_of)(params, x, key)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    test_loss = jax.jit(loss_of)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(train_x))
        for start in range(0, len(order), batch_size):
            key, step_key = jax.random.split(key)
            params, opt_state = step(params, opt_state, train_x[order[start:start + batch_size]], step_key)
    return float(test_loss(params, test_x, jax.random.PRNGKey(seed + 1000)))


def train_jaxvae(train_x, test_x, seed: int, epochs: int, init: str) -> float:
    config = VAEConfig(input_dim=train_x.shape[1], hidden=(500,), latent_dim=20, activation="relu",
                       likelihood="bernoulli", init=init)
    train_config = TrainConfig(batch_size=128, lr=1e-3, lr_schedule="constant", max_epochs=epochs, seed=seed)
    return fit(train_x, test_x, vae_config=config, train_config=train_config).history[-1]["val_loss"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=["mnist", "digits"], default="mnist")
    p.add_argument("--data-dir", default=None, help="directory holding the MNIST IDX files")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="experiments/results/from_flax.json")
    args = p.parse_args(argv)
    data = load_dataset(args.dataset, data_dir=args.data_dir, require=args.dataset == "mnist")
    train_x = fixed_binarization(data.train_x, 0)
    test_x = fixed_binarization(data.test_x, 1)
    trainers = {
        "flax example (Linen, its init)": lambda s: train_flax_example(train_x, test_x, s, args.epochs),
        "jaxvae, init='flax'": lambda s: train_jaxvae(train_x, test_x, s, args.epochs, "flax"),
        "jaxvae, init='torch'": lambda s: train_jaxvae(train_x, test_x, s, args.epochs, "torch"),
    }
    runs = []
    for seed in range(args.seeds):  # the settings interleaved, so that a drifting machine affects each alike
        for name, train in trainers.items():
            start = time.perf_counter()
            loss = train(seed)
            runs.append({"setting": name, "seed": seed, "test_neg_elbo": loss,
                         "seconds": round(time.perf_counter() - start, 1)})
            print(f"{name:32s} seed {seed}: test -ELBO {loss:.3f}  ({runs[-1]['seconds']} s)", flush=True)
    summary = {}
    for name in trainers:
        losses = [r["test_neg_elbo"] for r in runs if r["setting"] == name]
        summary[name] = {"mean": statistics.mean(losses), "min": min(losses), "max": max(losses),
                         "stdev": statistics.stdev(losses) if len(losses) > 1 else 0.0}
        print(f"{name:32s} mean {summary[name]['mean']:.3f}  range {summary[name]['min']:.3f}..{summary[name]['max']:.3f}")
    result = {"dataset": data.name, "epochs": args.epochs, "machine": jax.devices()[0].device_kind,
              "summary": summary, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
