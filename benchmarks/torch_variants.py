"""The PyTorch side of the speed benchmark (set up inside a worker process of train_speed.py).

All variants train torchref's modules (the blog's model, default init, the blog's two losses).
``torch_blog`` is the blog's loop as users run it; the others are the fastest honest PyTorch we
could write: manual batching of a preloaded tensor, fused Adam, torch.compile, CUDA graphs, and
``torch_heroic``: the gradient (torch.func) and the Adam update of K consecutive steps in one
fullgraph-compiled call, with the bias corrections computed on the host. ``torch_graphed`` captures
a whole training step, Adam included, in a CUDA graph and replays it per batch.
"""
from __future__ import annotations

import os

import numpy as np

from train_speed import Job, matmul_flops


def _setup(job):
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    # Full float32 matmuls on GPU (no TF32), as on the JAX side.
    torch.set_float32_matmul_precision(job["precision"])
    torch.backends.cuda.matmul.allow_tf32 = job["precision"] != "highest"
    torch.backends.cudnn.allow_tf32 = job["precision"] != "highest"
    return torch


def _sync(torch, device):
    if device == "cuda":
        torch.cuda.synchronize()


def make_matmul(job: dict) -> Job:
    """torch's (MKL's / cuBLAS's) matmul rate on the same dots as ``jax_variants.make_matmul``."""
    torch = _setup(job)
    dev = job["device"]
    layers, rows, backward = [tuple(layer) for layer in job["layers"]], job["rows"], job["backward"]
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand((rows, i), generator=g).to(dev) for i, _ in layers]
    gs = [torch.rand((rows, o), generator=g).to(dev) for _, o in layers]
    ws = [torch.rand((i, o), generator=g).to(dev) for i, o in layers]
    plan = []  # (a, b, out) for every product, outputs preallocated
    for k, (x, gr, w) in enumerate(zip(xs, gs, ws)):
        plan.append((x, w))
        if backward:
            plan.append((x.T, gr))
            if k:
                plan.append((gr, w.T))
    plan = [(a, b, torch.empty((a.shape[0], b.shape[1]), device=dev)) for a, b in plan]
    flops = matmul_flops(layers, rows, backward)
    reps = max(1, int(job.get("matmul_gflop", 2.0) * 1e9 // flops))

    def run():
        for _ in range(reps):
            for a, b, out in plan:
                torch.mm(a, b, out=out)
        _sync(torch, dev)

    run()
    return Job(run, flops=reps * flops, info={"version": f"torch {torch.__version__} ({dev})", "reps": reps})


def _build(torch, job):
    from torchref import GaussSimilarityLoss, UnitGaussKullbackLeiblerDivergenceLoss, build_blog_model

    torch.manual_seed(job["seed"])
    encoder, sampler, decoder = build_blog_model(784, 2, hidden=(job["hidden"],))
    dev = job["device"]
    return (encoder.to(dev), sampler.to(dev), decoder.to(dev),
            GaussSimilarityLoss(1.0).to(dev), UnitGaussKullbackLeiblerDivergenceLoss())


def make_job(job: dict, data: dict) -> Job:
    if job["variant"] == "matmul":
        return make_matmul(job)
    torch = _setup(job)
    dev = job["device"]
    encoder, sampler, decoder, data_loss, kl_loss = _build(torch, job)
    params = list(encoder.parameters()) + list(decoder.parameters())
    bs = job["batch"]
    variant = job["variant"]
    run_eval = None

    if variant == "torch_blog":
        from torch.utils.data import DataLoader

        from torchref import AutoencoderDataset, train_one_epoch, validate_one_epoch

        loader = DataLoader(AutoencoderDataset(data["train"]), batch_size=bs, shuffle=True)
        val_loader = DataLoader(AutoencoderDataset(data["val"]), batch_size=bs, shuffle=True)
        optimizer = torch.optim.Adam(params, lr=1e-3)

        def run_epoch():
            loss = train_one_epoch(encoder, sampler, decoder, loader, data_loss, optimizer, 1, kl_loss,
                                   dev if dev != "cpu" else None, verbose=False)
            _sync(torch, dev)
            return loss

        if job.get("eval"):
            def run_eval():
                loss = validate_one_epoch(encoder, sampler, decoder, val_loader, data_loss, 1, kl_loss,
                                          dev if dev != "cpu" else None, verbose=False)
                _sync(torch, dev)
                return loss
    elif variant in ("torch_fast", "torch_compile", "torch_cudagraphs"):
        train_x = torch.as_tensor(data["train"]).to(dev)
        n = train_x.shape[0]
        optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)

        def batch_loss(x):
            mu, sigma = encoder(x)
            return data_loss(decoder(sampler((mu, sigma))), x) + 1 * kl_loss((mu, sigma))

        if variant == "torch_compile":
            batch_loss = torch.compile(batch_loss)
        elif variant == "torch_cudagraphs":
            batch_loss = torch.compile(batch_loss, mode="reduce-overhead")

        def run_epoch():
            order = torch.randperm(n, device=dev)
            losses = []
            for start in range(0, n, bs):
                x = train_x[order[start:start + bs]]
                optimizer.zero_grad(set_to_none=True)
                if variant == "torch_cudagraphs":
                    torch.compiler.cudagraph_mark_step_begin()
                loss = batch_loss(x)
                loss.backward()
                optimizer.step()
                losses.append(loss.detach().clone())
            return float(torch.stack(losses).mean())  # one sync per epoch
    elif variant == "torch_heroic":
        run_epoch = _heroic_epoch(torch, job, data, encoder, decoder, data_loss, kl_loss)
    elif variant == "torch_graphed":
        run_epoch = _graphed_epoch(torch, job, data, encoder, sampler, decoder, data_loss, kl_loss)
    else:
        raise ValueError(f"unknown torch variant {variant!r}")
    return Job(run_epoch, run_eval=run_eval, steps=-(-len(data["train"]) // bs),
               info={"version": f"torch {torch.__version__} ({dev})"})


def _heroic_epoch(torch, job, data, encoder, decoder, data_loss, kl_loss):
    """K steps of gradient + Adam per compiled call; the state stays in preallocated tensors."""
    import torch._inductor.config as inductor_config
    from torch.func import functional_call, grad_and_value

    if job["device"] == "cpu":
        inductor_config.cpp_wrapper = True  # less Python between the kernels of a call
    dev, bs, k_steps = job["device"], job["batch"], max(1, job["heroic_steps"])
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
    names = [f"e.{k}" for k, _ in encoder.named_parameters()] + [f"d.{k}" for k, _ in decoder.named_parameters()]
    params = [p.detach().clone() for p in list(encoder.parameters()) + list(decoder.parameters())]
    exp_avg = [torch.zeros_like(p) for p in params]
    exp_avg_sq = [torch.zeros_like(p) for p in params]
    train_x = torch.as_tensor(data["train"]).to(dev)
    n = train_x.shape[0]
    latent = 2

    def loss_fn(flat, x, noise):
        enc = {k[2:]: v for k, v in zip(names, flat) if k.startswith("e.")}
        dec = {k[2:]: v for k, v in zip(names, flat) if k.startswith("d.")}
        mu, sigma = functional_call(encoder, enc, (x,))
        x_hat = functional_call(decoder, dec, (mu + sigma * noise,))
        return data_loss(x_hat, x) + 1 * kl_loss((mu, sigma))

    value_and_grad = grad_and_value(loss_fn)

    def steps(flat, m, v, rows, step_sizes, bias2_sqrt):
        """len(step_sizes) Adam steps on the batches ``rows`` [k, b]; updates flat, m, v in place."""
        losses = []
        for s in range(rows.shape[0]):
            x = train_x[rows[s]]
            noise = torch.randn(x.shape[0], latent, device=x.device)
            grads, loss = value_and_grad(flat, x, noise)
            for p, m_, v_, g in zip(flat, m, v, grads):
                m_.mul_(b1).add_(g, alpha=1 - b1)
                v_.mul_(b2).addcmul_(g, g, value=1 - b2)
                p.sub_(step_sizes[s] * m_ / (v_.sqrt() / bias2_sqrt[s] + eps))
            losses.append(loss)
        return torch.stack(losses)

    compiled = torch.compile(steps, fullgraph=True, dynamic=False)
    counter = {"t": 0}

    def call(rows):
        k = rows.shape[0]
        t = np.arange(counter["t"] + 1, counter["t"] + k + 1, dtype=np.float64)
        counter["t"] += k
        step_sizes = torch.as_tensor(lr / (1 - b1**t), dtype=torch.float32, device=dev)
        bias2_sqrt = torch.as_tensor(np.sqrt(1 - b2**t), dtype=torch.float32, device=dev)
        return compiled(params, exp_avg, exp_avg_sq, rows, step_sizes, bias2_sqrt)

    def run_epoch():
        order = torch.randperm(n, device=dev)
        n_full = n // bs
        grouped = (n_full // k_steps) * k_steps
        losses = []
        for g in range(0, grouped, k_steps):
            losses.append(call(order[g * bs:(g + k_steps) * bs].view(k_steps, bs)))
        for g in range(grouped, n_full):  # batches left over when K does not divide the count
            losses.append(call(order[g * bs:(g + 1) * bs].view(1, bs)))
        if n % bs:
            losses.append(call(order[n_full * bs:].view(1, -1)))
        loss = float(torch.cat(losses).mean())
        if job["device"] == "cuda":
            torch.cuda.synchronize()
        return loss

    return run_epoch


def _graphed_epoch(torch, job, data, encoder, sampler, decoder, data_loss, kl_loss):
    """A whole training step (forward, backward, fused Adam) on static tensors, captured once per batch
    size in a CUDA graph (PyTorch's "whole-network capture"); an epoch gathers each batch into the static
    input and replays the graph, so no step launches a kernel from Python. The full batches and the
    epoch's last, partial one (60000 = 468 x 128 + 96) each get a graph. Without CUDA the same steps
    run eagerly on the same static tensors, which is how the tests check the bookkeeping on a CPU."""
    dev, bs = job["device"], job["batch"]
    capture = dev == "cuda"
    train_x = torch.as_tensor(data["train"]).to(dev)
    n = train_x.shape[0]
    # capturable: Adam's step count and bias corrections live on the device, so every replay advances them
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3, fused=True,
                                 capturable=capture)
    loss_sum = torch.zeros((), device=dev)  # summed on the device; read once per epoch
    sizes = sorted({min(bs, n), n - (n - 1) // bs * bs})  # the full batch and the last one
    static_x = {size: train_x[:size].clone() for size in sizes}

    def step(x):
        mu, sigma = encoder(x)
        loss = data_loss(decoder(sampler((mu, sigma))), x) + 1 * kl_loss((mu, sigma))
        loss.backward()
        optimizer.step()
        loss_sum.add_(loss.detach())

    def eager(size):
        optimizer.zero_grad(set_to_none=True)
        step(static_x[size])

    if capture:
        replay = {size: _capture(torch, lambda size=size: eager(size)).replay for size in sizes}
    else:
        replay = {size: (lambda size=size: eager(size)) for size in sizes}

    def run_epoch():
        loss_sum.zero_()
        order = torch.randperm(n, device=dev)
        for start in range(0, n, bs):
            rows = order[start:start + bs]
            torch.index_select(train_x, 0, rows, out=static_x[len(rows)])
            replay[len(rows)]()
        return float(loss_sum) / -(-n // bs)  # the mean batch loss; the one sync of the epoch

    return run_epoch


def _capture(torch, train_step):
    """``train_step()`` captured in a CUDA graph after three warm-up steps on a side stream (cuBLAS
    handles, Adam's state), as PyTorch's documentation on whole-network capture does. ``train_step``
    starts with ``zero_grad(set_to_none=True)``, so backward allocates the gradients in the graph's pool."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            train_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        train_step()
    return graph
