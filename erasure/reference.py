"""Reference-style implementations, kept as oracles for tests and benchmarks (not the methods themselves).

:func:`reference_loop` trains ESD-x the way the reference scripts do: a deep-copied frozen teacher UNet, a fresh
partial DDIM trajectory every iteration, the original code's training-timestep bucket
(train-scripts/train-esd.py at rohitgandikota/erasing b8aeab6). ``scripts/bench_esd.py`` compares our trainer's
cost against it and ``scripts/esd_vs_reference.py`` its quality. Imports torch only when called.
"""

from __future__ import annotations

import time

DDIM_STEPS = 50
GUIDANCE = 3.0


def reference_loop(pipe, concept: str, *, iterations: int, lr: float, eta: float, counter, seed: int = 0,
                   ddim_steps: int = DDIM_STEPS, guidance: float = GUIDANCE, t_enc: int | None = None,
                   timings: dict | None = None, anchor: str = ""):
    """ESD the reference way: a deep-copied frozen teacher, a fresh partial trajectory every iteration.

    Returns (new esd-x values, losses); the pipeline's UNet is restored. ``t_enc`` fixes the DDIM index
    (a small sampling budget for timing); ``timings`` collects per-part seconds. ``anchor`` is the
    concept whose frozen prediction the target starts from ("" = the empty prompt, as in ESD); the
    trajectory's guidance always contrasts the concept with the empty prompt."""
    import copy

    import numpy as np
    import torch
    from diffusers import DDIMScheduler

    from erasure.methods.esd import _encode, esd_loss, training_timestep
    from erasure.modules import parameter_group

    def tick(key, t0):
        if timings is not None:
            timings.setdefault(key, []).append(time.perf_counter() - t0)

    unet = pipe.unet
    teacher = copy.deepcopy(unet).eval().requires_grad_(False)  # two UNets in memory
    params = parameter_group(unet, "esd-x")
    originals = {n: p.detach().clone() for n, p in params.items()}
    was_training = unet.training
    unet.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(list(params.values()), lr=lr)
    emb_c, emb_u = _encode(pipe, [concept]), _encode(pipe, [""])
    emb_a = emb_u if anchor == "" else _encode(pipe, [anchor])
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(ddim_steps)
    shape = (1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    unet.train()
    for _ in range(iterations):
        k = int(rng.integers(0, ddim_steps)) if t_enc is None else t_enc
        t = torch.tensor([training_timestep(k, ddim_steps, rng)])
        latents = torch.randn(shape, generator=gen) * scheduler.init_noise_sigma
        with torch.no_grad():
            for step_t in scheduler.timesteps[: ddim_steps - k]:
                t0 = time.perf_counter()
                inp = scheduler.scale_model_input(torch.cat([latents, latents]), step_t)
                eps_u, eps_c = teacher(inp, step_t, encoder_hidden_states=torch.cat([emb_u, emb_c])).sample.chunk(2)
                counter.forward += 2
                latents = scheduler.step(eps_u + guidance * (eps_c - eps_u), step_t, latents).prev_sample
                tick("cfg_step_b2", t0)
            t0 = time.perf_counter()
            eps_anchor = teacher(latents, t, encoder_hidden_states=emb_a).sample
            tick("teacher_b1", t0)
            t0 = time.perf_counter()
            eps_concept = teacher(latents, t, encoder_hidden_states=emb_c).sample
            tick("teacher_b1", t0)
            counter.forward += 2
        t0 = time.perf_counter()
        pred = unet(latents, t, encoder_hidden_states=emb_c).sample
        loss = esd_loss(pred, eps_anchor, eps_concept, eta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        counter.forward += 1
        counter.backward += 1
        tick("student_fwd_bwd", t0)
        t0 = time.perf_counter()
        optimizer.step()
        tick("adam_step", t0)
        losses.append(float(loss.detach()))
    new_values = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(originals[n])
            p.grad = None  # the last step's gradients would otherwise enter the next trainer's first step
            p.requires_grad_(True)
    unet.train(was_training)
    del teacher
    return new_values, losses
