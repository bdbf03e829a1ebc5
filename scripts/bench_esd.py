"""Benchmark ESD (``esd-x``, ``sampling="frozen"``) against a straightforward reference-style loop.

The reference-style loop (:func:`erasure.reference.reference_loop`, the package's oracle) does what the current diffusers ESD
code does: a deep copy of the UNet is the frozen teacher (two UNets in memory), Adam trains the esd-x
parameters of the student, and EVERY iteration samples a fresh partial DDIM trajectory with the teacher
(CFG 3 on the concept prompt, batch 1, 50-step schedule, 50 - t_enc steps with t_enc ~ U{0..49}), then
runs the teacher on the anchor ("") and the concept, then the student forward + backward. UNet passes
are counted with ``PassCounter``'s convention (one forward per sample, a CFG step = 2 forwards, a
backward counted as 2 in ``total``).

Part 1, the built-in world (8x8x4 latents): both trainers on the same number of training samples,
each in a fresh subprocess, for UNet passes, wall seconds and peak memory (ru_maxrss).

Part 2, random weights of the real SD 1.5 shape (64x64x4 latents, fp32, batch 1): per-iteration cost
only. One reference-style iteration with a small t_enc budget measures the unit costs (batch-2 CFG
forward, batch-1 teacher forward, student forward+backward, Adam step); the reference's expected
iteration (mean 25.5 CFG steps) and ours' per-sample cost (from the pass counts per sample that ours
incurs on the world, which do not depend on the model size) follow from them. Peak memory in fresh
subprocesses: (i) UNet + deep-copied teacher + one student step with Adam, (ii) one UNet + saved
originals of the esd-x parameters + one student step with Adam, and (iii) the no-grad batched forward
that ours' pool building runs (measured at two batch sizes, extrapolated to the batch sizes esd.py uses).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_esd.py [--threads 1] [--quick]

``--memory-only`` measures the peak memory alone (a training step, then a whole short erasure); with ``--docs``
it writes the summary table between the ``esd-memory`` markers of docs/methods.md:

    python scripts/bench_esd.py --memory-only --threads 1 --docs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The orchestrating process stays light (no torch import): a child's ru_maxrss can include the
# parent's RSS at exec time on Linux, and the peaks measured in the children must be their own.

DDIM_STEPS = 50
GUIDANCE = 3.0
CONCEPT = "circle"
MEAN_CFG_STEPS = sum(DDIM_STEPS - k for k in range(DDIM_STEPS)) / DDIM_STEPS  # t_enc ~ U{0..49}: 25.5
# the no-grad UNet batches ours' pool building runs on an SD-sized UNet with ESDConfig's frozen_batch="auto" (2):
SAMPLER_BATCH = 2 * (2 // 2)  # esd._build_pool: frozen_batch // 2 trajectories at a time, with CFG
FROZEN_BATCH = 2 * 2  # esd._frozen_predictions: frozen_batch samples at a time, anchor + concept

_T0 = float(os.environ.setdefault("BENCH_ESD_T0", str(time.time())))  # children log on the parent's clock


def log(msg: str) -> None:
    print(f"[{time.time() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _setup_torch(threads: int):
    import torch

    torch.set_num_threads(threads)
    return torch


# --------------------------------------------------------------------------- the reference-style loop


from erasure.reference import reference_loop  # noqa: E402  (the reference-style oracle lives in the package)
from erasure.experiments import check_markers, markdown_table, script_main, write_docs_table  # noqa: E402  (no torch)

TABLE = "esd-memory"  # --memory-only's summary table


# --------------------------------------------------------------------------- SD 1.5-shaped models


def build_sd15_unet(sample_size: int = 64):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8,
        cross_attention_dim=768,
    ).eval()


def build_sd15_namespace(sample_size: int, tmpdir: str):
    """SD 1.5-shaped pipeline stand-in: what esd.py reads (unet, text_encoder, tokenizer, scheduler)."""
    from types import SimpleNamespace

    import torch
    from diffusers import DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from erasure.offline import BOS_TOKEN_ID, CLIP_VOCAB_SIZE, EOS_TOKEN_ID, clip_tokenizer

    torch.manual_seed(0)
    unet = build_sd15_unet(sample_size)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, vocab_size=CLIP_VOCAB_SIZE, hidden_act="quick_gelu",
        bos_token_id=BOS_TOKEN_ID, eos_token_id=EOS_TOKEN_ID, pad_token_id=EOS_TOKEN_ID,
    )).eval()
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", steps_offset=1, set_alpha_to_one=False,
                              clip_sample=False)
    return SimpleNamespace(unet=unet, text_encoder=text_encoder, tokenizer=clip_tokenizer(tmpdir),
                           scheduler=scheduler)


def _student_step(unet, params, optimizer, x, t, emb, target):
    import torch

    pred = unet(x, t, encoder_hidden_states=emb).sample
    loss = torch.nn.functional.mse_loss(pred, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss)


# --------------------------------------------------------------------------- child variants


def variant_world(args) -> dict:
    torch = _setup_torch(args.threads)
    import gc

    from erasure import load_pipeline
    from erasure.methods import erase
    from erasure.methods.esd import PassCounter

    pipe = load_pipeline(None)
    gc.collect()
    rss_loaded, max_loaded = rss_now_mb(), maxrss_mb()
    counter = PassCounter()
    n = args.world_iterations
    log(f"{args._variant}: {n} iterations x batch 1 on the world ({args.threads} thread(s))")
    t0 = time.perf_counter()
    extra = {}
    if args._variant == "world-ours":
        edit = erase(pipe, "esd-x", [CONCEPT], iterations=n, batch_size=1, lr=1e-4, eta=1.0, ddim_steps=DDIM_STEPS,
                     start_guidance=GUIDANCE, sampling="frozen", progress=False, counter=counter,
                     retain_prompts=())  # the reference's objective: no retain term (the world's default has one)
        final_loss = edit.info["final_loss"]
        extra = {"seconds_pool": edit.info["seconds_pool"], "seconds_train": edit.info["seconds_train"]}
    else:
        _, losses = reference_loop(pipe, CONCEPT, iterations=n, lr=1e-4, eta=1.0, counter=counter)
        final_loss = sum(losses[-20:]) / len(losses[-20:])
    wall = time.perf_counter() - t0
    del torch
    return {"samples": n, "forward": counter.forward, "backward": counter.backward, "total": counter.total,
            "wall_s": wall, "rss_loaded_mb": rss_loaded, "maxrss_loaded_mb": max_loaded, "maxrss_mb": maxrss_mb(),
            "final_loss": final_loss, **extra}


def variant_sd15_time(args) -> dict:
    """One reference-style iteration with a small t_enc budget on the SD 1.5 shape, timed by parts;
    then a compatibility check: esd.py's trainer on the SimpleNamespace pipeline (8x8 latents)."""
    torch = _setup_torch(args.threads)
    import tempfile

    from erasure.methods import erase
    from erasure.methods.esd import PassCounter

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_sd15_namespace(args.sd15_latent, tmp)
        build_s = time.perf_counter() - t0
        log(f"sd15-time: built UNet ({sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.0f}M params) + "
            f"text encoder in {build_s:.1f} s; one reference iteration with {args.sd15_cfg_steps} CFG step(s), "
            f"{args.sd15_latent}x{args.sd15_latent} latents")
        timings: dict = {}
        counter = PassCounter()
        t0 = time.perf_counter()
        reference_loop(pipe, CONCEPT, iterations=1, lr=1e-4, eta=1.0, counter=counter,
                       t_enc=DDIM_STEPS - args.sd15_cfg_steps, timings=timings)
        iteration_s = time.perf_counter() - t0
        log("sd15-time: " + ", ".join(f"{k} {sum(v) / len(v):.2f} s (x{len(v)})" for k, v in timings.items()))
        # compatibility: esd.py needs only unet (.device, .config), text_encoder, tokenizer, scheduler
        compat = "ok"
        try:
            if pipe.unet.config.sample_size != 8:
                pipe.unet.register_to_config(sample_size=8)
            t1 = time.perf_counter()
            erase(pipe, "esd-x", [CONCEPT], iterations=1, batch_size=1, ddim_steps=2, progress=False,
                  counter=PassCounter())
            compat = f"ok (erase() on the SimpleNamespace pipeline, 8x8 latents, ddim_steps=2: " \
                     f"{time.perf_counter() - t1:.1f} s)"
        except Exception as exc:  # report, do not hide
            compat = f"FAILED: {type(exc).__name__}: {exc}"
        log(f"sd15-time: compatibility check {compat}")
    del torch
    return {"build_s": build_s, "iteration_s": iteration_s, "timings": timings, "forward": counter.forward,
            "backward": counter.backward, "compat": compat}


def variant_sd15_mem(args) -> dict:
    """Peak RSS of one training step on the SD 1.5 shape: reference (two UNets) or ours (one UNet)."""
    torch = _setup_torch(args.threads)
    import copy
    import gc

    from erasure.modules import parameter_group

    torch.manual_seed(0)
    unet = build_sd15_unet(args.sd15_latent)
    gc.collect()
    rss_built, max_built = rss_now_mb(), maxrss_mb()
    size = args.sd15_latent
    x = torch.randn(1, 4, size, size)
    emb = torch.randn(1, 77, 768)
    t = torch.tensor([500])
    target = torch.randn(1, 4, size, size)
    out: dict = {"rss_built_mb": rss_built, "maxrss_built_mb": max_built}
    t0 = time.perf_counter()
    if args._variant == "sd15-mem-pool":
        # ours' pool building: no-grad batched forwards (sampler: 32 = 16 trajectories x CFG; frozen
        # predictions: 128 = 64 samples x anchor/concept); measured at two small batches, extrapolated
        points = []
        with torch.no_grad():
            for b in args.pool_batches:
                xb, eb = x.expand(b, -1, -1, -1).contiguous(), emb.expand(b, -1, -1).contiguous()
                tb = time.perf_counter()
                unet(xb, t.expand(b), encoder_hidden_states=eb)
                del xb, eb
                points.append({"batch": b, "maxrss_mb": maxrss_mb(), "seconds": time.perf_counter() - tb})
                log(f"sd15-mem-pool: no-grad forward at batch {b}: {points[-1]['seconds']:.1f} s, "
                    f"maxrss {points[-1]['maxrss_mb']:.0f} MB")
        out["points"] = points
    else:
        held = []  # kept alive until the end of the step
        if args._variant == "sd15-mem-reference":
            held.append(copy.deepcopy(unet).eval().requires_grad_(False))  # the frozen teacher
        params = parameter_group(unet, "esd-x")
        if args._variant in ("sd15-mem-ours", "sd15-mem-ours-no-gc"):
            held.append({n: p.detach().clone() for n, p in params.items()})  # the originals esd.py keeps
        if args._variant == "sd15-mem-ours":  # ESDConfig's default, gradient_checkpointing="auto", as esd.py resolves it
            from erasure.methods.esd import use_gradient_checkpointing

            out["gradient_checkpointing"] = use_gradient_checkpointing("auto", unet)
            if out["gradient_checkpointing"]:
                unet.enable_gradient_checkpointing()
        out["esd_x_params"] = sum(p.numel() for p in params.values())
        unet.requires_grad_(False)
        for p in params.values():
            p.requires_grad_(True)
        unet.train()
        optimizer = torch.optim.Adam(list(params.values()), lr=1e-4)
        _student_step(unet, params, optimizer, x, t, emb, target)
        log(f"{args._variant}: one student step with Adam in {time.perf_counter() - t0:.1f} s, "
            f"maxrss {maxrss_mb():.0f} MB")
    out["seconds"] = time.perf_counter() - t0
    out["maxrss_mb"] = maxrss_mb()
    out["held"] = len(locals().get("held", []))
    return out


def variant_sd15_erase(args) -> dict:
    """Peak RSS of a whole (short) erasure on the SD 1.5 shape, text encoder included: the reference-style
    loop or ours' ``erase()`` with its defaults (pool building with ``frozen_batch="auto"``, gradient
    checkpointing "auto"), both 3 iterations x batch 1 (from the second on, Adam's state is in memory during
    the backward pass: the steady state); the reference samples 2 CFG steps per iteration, ours builds its
    pool on a 4-step DDIM schedule. These lengths change the time, not the batch sizes."""
    torch = _setup_torch(args.threads)
    import gc
    import tempfile

    from erasure.methods import erase
    from erasure.methods.esd import PassCounter

    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_sd15_namespace(args.sd15_latent, tmp)
        gc.collect()
        out: dict = {"rss_built_mb": rss_now_mb(), "maxrss_built_mb": maxrss_mb()}
        counter = PassCounter()
        t0 = time.perf_counter()
        if args._variant == "sd15-erase-reference":
            reference_loop(pipe, CONCEPT, iterations=3, lr=1e-4, eta=1.0, counter=counter, t_enc=DDIM_STEPS - 2)
        else:
            edit = erase(pipe, "esd-x", [CONCEPT], iterations=3, batch_size=1, ddim_steps=4, progress=False,
                         counter=counter)
            out["gradient_checkpointing"] = edit.info["gradient_checkpointing"]
        out["seconds"] = time.perf_counter() - t0
        out["maxrss_mb"] = maxrss_mb()
        out["forward"], out["backward"] = counter.forward, counter.backward
        log(f"{args._variant}: {out['seconds']:.1f} s, maxrss {out['maxrss_mb']:.0f} MB "
            f"(built {out['rss_built_mb']:.0f} MB)")
    del torch
    return out


VARIANTS = {"world-ours": variant_world, "world-reference": variant_world, "sd15-time": variant_sd15_time,
            "sd15-mem-reference": variant_sd15_mem, "sd15-mem-ours": variant_sd15_mem,
            "sd15-mem-ours-no-gc": variant_sd15_mem,
            "sd15-mem-pool": variant_sd15_mem,
            "sd15-erase-reference": variant_sd15_erase, "sd15-erase-ours": variant_sd15_erase}


# --------------------------------------------------------------------------- orchestration


def run_child(args, variant: str, **overrides) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_variant", variant, "--threads", str(args.threads),
           "--world-iterations", str(overrides.get("world_iterations", args.world_iterations)),
           "--sd15-latent", str(args.sd15_latent), "--sd15-cfg-steps", str(args.sd15_cfg_steps),
           "--pool-batches", *map(str, args.pool_batches)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        raise SystemExit(f"variant {variant} failed (rc {proc.returncode}); its stderr is above")
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            result["process_s"] = time.perf_counter() - t0
            return result
    raise SystemExit(f"variant {variant} printed no result")


def ratio(a: float, b: float, digits: int = 2) -> str:
    return f"{a / b:.{digits}f}x" if b else "n/a"


def part1(args) -> dict:
    log(f"part 1: built-in world, {args.world_iterations} training samples per variant (fresh subprocesses)")
    ref = run_child(args, "world-reference")
    log(f"reference: {ref['wall_s']:.1f} s, {ref['total']} passes")
    ours = run_child(args, "world-ours")
    log(f"ours: {ours['wall_s']:.1f} s, {ours['total']} passes")
    print(f"\n## Part 1: built-in world (8x8x4 latents), esd-x, lr 1e-4, eta 1, batch 1, "
          f"{args.threads} thread(s)\n")
    print("| variant | samples | UNet fwd | bwd | total passes | wall s | peak extra RSS MB | maxrss MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in (("reference-style (teacher copy, fresh trajectory per iteration)", ref),
                    ("ours (sampling=frozen)", ours)):
        print(f"| {name} | {r['samples']} | {r['forward']} | {r['backward']} | {r['total']} | {r['wall_s']:.1f} | "
              f"{r['maxrss_mb'] - r['rss_loaded_mb']:.1f} | {r['maxrss_mb']:.0f} |")
    print(f"| **ratio reference/ours** | | {ratio(ref['forward'], ours['forward'])} | "
          f"{ratio(ref['backward'], ours['backward'])} | **{ratio(ref['total'], ours['total'])}** | "
          f"{ratio(ref['wall_s'], ours['wall_s'])} | "
          f"{ratio(ref['maxrss_mb'] - ref['rss_loaded_mb'], ours['maxrss_mb'] - ours['rss_loaded_mb'])} | "
          f"{ratio(ref['maxrss_mb'], ours['maxrss_mb'])} |")
    print(f"\nPeak extra RSS = ru_maxrss at the end - VmRSS after loading the pipeline (pipeline RSS: reference "
          f"{ref['rss_loaded_mb']:.0f} MB, ours {ours['rss_loaded_mb']:.0f} MB). Ours' wall: pool "
          f"{ours['seconds_pool']:.1f} s + training {ours['seconds_train']:.1f} s. Final loss (mean of the last 20, "
          f"a sanity check only): reference {ref['final_loss']:.4g}, ours {ours['final_loss']:.4g}.")
    print("Quality of the two edits: skipped here (compared elsewhere).")
    return {"ref": ref, "ours": ours}


def pass_counts(args) -> dict:
    n = args.count_iterations
    log(f"pass counts per sample: ours on the world, iterations={n}, batch_size=1")
    r = run_child(args, "world-ours", world_iterations=n)
    student_f, student_b = n, n  # one student forward + backward per sample
    pool_f = r["forward"] - student_f
    frozen_f = 2 * n  # anchor + concept
    sampling_f = pool_f - frozen_f
    ideal_sampling_f = 2 * DDIM_STEPS * math.ceil(n / DDIM_STEPS)
    print(f"\n## Ours' UNet passes per sample (world, iterations={n}, batch_size=1; "
          f"independent of the model size)\n")
    print("| part | forward passes | per sample |")
    print("|---|---:|---:|")
    print(f"| trajectories (CFG, up front) | {sampling_f} | {sampling_f / n:.3f} |")
    print(f"| frozen predictions (anchor + concept) | {frozen_f} | {frozen_f / n:.3f} |")
    print(f"| student forward (+ backward = 2) | {student_f} (+{student_b}) | 1 (+1) |")
    print(f"| **total (fwd + 2 bwd)** | {r['total']} | **{r['total'] / n:.3f}** |")
    print(f"\nTrajectory passes if every trajectory held 50 distinct t_enc (ceil(n/50) full trajectories): "
          f"{ideal_sampling_f} ({ideal_sampling_f / n:.3f} per sample). Wall {r['wall_s']:.1f} s "
          f"(pool {r['seconds_pool']:.1f} s, training {r['seconds_train']:.1f} s).")
    ref_f = 2 * MEAN_CFG_STEPS + 2 + 1
    print(f"Reference-style per sample (expected): {2 * MEAN_CFG_STEPS:.0f} CFG forwards (mean "
          f"{MEAN_CFG_STEPS} steps x 2) + 2 teacher + 1 student forward, 1 backward: "
          f"total {ref_f + 2:.1f}; ratio reference/ours {(ref_f + 2) / (r['total'] / n):.2f}x.")
    return {"n": n, "pool_f_per_sample": pool_f / n, "total_per_sample": r["total"] / n, "ref_total": ref_f + 2,
            "run": r}


def part2(args, counts: dict) -> dict:
    size = args.sd15_latent
    log(f"part 2: SD 1.5 shape, random weights, {size}x{size}x4 latents, batch 1, fp32 (fresh subprocesses)")
    tm = run_child(args, "sd15-time")
    mem_ref = run_child(args, "sd15-mem-reference")
    mem_ours = run_child(args, "sd15-mem-ours")
    mem_pool = run_child(args, "sd15-mem-pool")
    mean = {k: sum(v) / len(v) for k, v in tm["timings"].items()}
    mean["cfg_step_b2"] = min(tm["timings"]["cfg_step_b2"])  # the first call carries one-time overhead
    t_b2, t_b1, t_sb, t_adam = mean["cfg_step_b2"], mean["teacher_b1"], mean["student_fwd_bwd"], mean["adam_step"]
    per_pass_batched = t_b2 / 2  # a batched forward's cost per sample (no batching gain assumed beyond batch 2)
    ref_iter = MEAN_CFG_STEPS * t_b2 + 2 * t_b1 + t_sb + t_adam
    # ours' student step: as measured in the memory run with ours' default settings (gradient checkpointing
    # on at this size recomputes activations); the reference's step is the one timed above
    ours_step = mem_ours["seconds"] if mem_ours.get("gradient_checkpointing") else t_sb + t_adam
    ours_sample = counts["pool_f_per_sample"] * per_pass_batched + ours_step

    print(f"\n## Part 2: SD 1.5 shape (random weights, {size}x{size}x4 latents = {size * 8} px, batch 1, fp32, "
          f"{args.threads} thread(s))\n")
    print("Unit costs, measured in one reference-style iteration with "
          f"{args.sd15_cfg_steps} CFG step(s) (iteration wall {tm['iteration_s']:.1f} s):\n")
    print("| unit | seconds |")
    print("|---|---:|")
    print(f"| UNet forward, batch 2 (one CFG step incl. scheduler; min of "
          f"{', '.join(f'{v:.2f}' for v in tm['timings']['cfg_step_b2'])}) | {t_b2:.2f} |")
    print(f"| UNet forward, batch 1 (teacher) | {t_b1:.2f} (x{len(tm['timings']['teacher_b1'])}) |")
    print(f"| student forward + backward (esd-x) | {t_sb:.2f} |")
    print(f"| Adam step (esd-x) | {t_adam:.3f} |")
    print("\nPer training sample (batch 1):\n")
    print("| variant | how | seconds per sample |")
    print("|---|---|---:|")
    print(f"| reference-style | {MEAN_CFG_STEPS} CFG steps x {t_b2:.2f} + 2 x {t_b1:.2f} + {t_sb:.2f} + "
          f"{t_adam:.3f} | {ref_iter:.1f} |")
    print(f"| ours | {counts['pool_f_per_sample']:.3f} batched forwards x {per_pass_batched:.2f} + student step "
          f"{ours_step:.2f} (gradient checkpointing {mem_ours.get('gradient_checkpointing')}) | {ours_sample:.1f} |")
    print(f"| **ratio reference/ours** | | **{ratio(ref_iter, ours_sample)}** |")
    print(f"\nFor a 1000-sample erasure on this CPU: reference ~{ref_iter * 1000 / 3600:.1f} h, ours "
          f"~{ours_sample * 1000 / 3600:.1f} h. Ours' batched forwards are costed at half a batch-2 forward each "
          f"(on CPU batching gains little; on a GPU the batch-32/128 forwards are cheaper per sample).")

    ref_extra = mem_ref["maxrss_mb"] - mem_ref["rss_built_mb"]
    ours_extra = mem_ours["maxrss_mb"] - mem_ours["rss_built_mb"]
    pts = mem_pool["points"]
    base = mem_pool["rss_built_mb"]
    # slope from the last two points (the first forward also carries one-time allocations)
    (b_lo, m_lo), (b_hi, m_hi) = (pts[-2]["batch"], pts[-2]["maxrss_mb"]), (pts[-1]["batch"], pts[-1]["maxrss_mb"])
    slope = (m_hi - m_lo) / (b_hi - b_lo) if b_hi != b_lo else float("nan")
    act_lo = m_lo - base

    def pool_peak(b: int) -> float:
        return base + act_lo + (b - b_lo) * slope

    n_default = 200 * 4
    pool_tensors_mb = n_default * 3 * 4 * size * size * 4 / 2**20
    print("\nPeak memory (ru_maxrss of a fresh process; UNet built in it first):\n")
    print("| variant | what it holds | UNet RSS MB | peak extra MB | peak RSS MB |")
    print("|---|---|---:|---:|---:|")
    print(f"| (i) reference-style | UNet + deep-copied teacher + student step, Adam on esd-x "
          f"({mem_ref['esd_x_params'] / 1e6:.1f}M params) | {mem_ref['rss_built_mb']:.0f} | {ref_extra:.0f} | "
          f"{mem_ref['maxrss_mb']:.0f} |")
    print(f"| (ii) ours (default; gradient checkpointing {mem_ours['gradient_checkpointing']}) | UNet + originals "
          f"of esd-x + student step, Adam on esd-x | {mem_ours['rss_built_mb']:.0f} | "
          f"{ours_extra:.0f} | {mem_ours['maxrss_mb']:.0f} |")
    print(f"| **ratio ours/reference** | | | {ratio(ours_extra, ref_extra)} | "
          f"**{ratio(mem_ours['maxrss_mb'], mem_ref['maxrss_mb'], 3)}** |")
    print("\n(iii) ours' pool building (not in (ii)): no-grad forwards measured at batch "
          + ", ".join(f"{p['batch']} (peak {p['maxrss_mb']:.0f} MB, {p['seconds']:.1f} s)" for p in pts)
          + f" over a UNet RSS of {base:.0f} MB: ~{slope:.0f} MB per extra sample (batch {b_lo} -> {b_hi}). "
          f"Extrapolated peak at the batch sizes esd.py uses: sampler batch {SAMPLER_BATCH} ~{pool_peak(SAMPLER_BATCH) / 1024:.1f} GB, "
          f"frozen predictions batch {FROZEN_BATCH} ~{pool_peak(FROZEN_BATCH) / 1024:.1f} GB "
          f"(vs reference peak {mem_ref['maxrss_mb'] / 1024:.1f} GB). The cached pool itself at the default "
          f"200 x 4 samples (x_t, eps_anchor, eps_concept): {pool_tensors_mb:.0f} MB.")
    print(f"\nSimpleNamespace(unet, text_encoder, tokenizer, scheduler) with esd.py: {tm['compat']}")
    return {"ref_iter": ref_iter, "ours_sample": ours_sample, "mem_ref": mem_ref, "mem_ours": mem_ours,
            "pool_peak_frozen": pool_peak(FROZEN_BATCH), "pool_peak_sampler": pool_peak(SAMPLER_BATCH)}


def memory_table(step_ref: dict, step_ours: dict, step_no_gc: dict, whole_ref: dict, whole_ours: dict) -> str:
    """The docs' summary: peak RSS of the reference-style loop and ours (defaults), the training step (with and
    without gradient checkpointing) and the whole erasure, each ratio to the reference's."""
    def mb(r: dict) -> str:
        return f"{r['maxrss_mb']:,.0f} MB"

    rows = [{"what": "one training step with Adam (UNet only)", "ref": step_ref, "ours": step_ours, "bold": True},
            {"what": "the same without gradient checkpointing", "ref": step_ref, "ours": step_no_gc, "bold": False,
             "ref_cell": ""},
            {"what": "a whole erasure, text encoder loaded: 3 iterations (reference: 2 CFG steps each; ours: the pool "
                     "on a 4-step schedule, then training)", "ref": whole_ref, "ours": whole_ours, "bold": True}]

    def ratio_cell(r: dict) -> str:
        text = ratio(r["ours"]["maxrss_mb"], r["ref"]["maxrss_mb"], 3)
        return f"**{text}**" if r["bold"] else text

    columns = [("what", lambda r: r["what"]), ("reference-style", lambda r: r.get("ref_cell", mb(r["ref"]))),
               ("ours (defaults)", lambda r: mb(r["ours"])), ("ratio", ratio_cell)]
    # right-aligned numbers, as the docs' other memory tables
    return markdown_table(rows, columns).replace("|---|---|---|---|", "|---|---:|---:|---:|", 1)


def memory_only(args, command: str) -> int:
    """Peak memory of one training step only: reference, ours (default settings), ours without gradient
    checkpointing; then a whole short erasure. With ``args.docs``, the summary between the esd-memory markers."""
    size = args.sd15_latent
    rows = {v: run_child(args, v) for v in ("sd15-mem-reference", "sd15-mem-ours", "sd15-mem-ours-no-gc")}
    ref = rows["sd15-mem-reference"]["maxrss_mb"]
    print(f"# ESD training-step peak memory, SD 1.5 shape (random weights, {size}x{size}x4 latents, batch 1, fp32)\n")
    print("| variant | peak RSS MB | ratio to reference | step seconds |\n|---|---:|---:|---:|")
    for v, r in rows.items():
        print(f"| {v.replace('sd15-mem-', '')} | {r['maxrss_mb']:.0f} | {r['maxrss_mb'] / ref:.3f} | {r['seconds']:.1f} |")
    ours = rows["sd15-mem-ours"]["maxrss_mb"] / ref
    print(f"\n(ours: default settings; gradient_checkpointing=\"auto\" resolved to "
          f"{rows['sd15-mem-ours']['gradient_checkpointing']} on this UNet)")
    print(f"\n- at most 0.6x the reference's peak memory (training step): ours (default) {ours:.3f}, without "
          f"gradient checkpointing {rows['sd15-mem-ours-no-gc']['maxrss_mb'] / ref:.3f} "
          f"({'HOLDS' if ours <= 0.6 else 'DOES NOT HOLD'})")
    # the whole erasure: pool building (no-grad batched forwards) included, text encoder in memory in both
    whole = {v: run_child(args, v) for v in ("sd15-erase-reference", "sd15-erase-ours")}
    wref, wours = whole["sd15-erase-reference"], whole["sd15-erase-ours"]
    print("\n# Whole erasure peak memory, SD 1.5 shape with a ViT-L/14-shaped text encoder\n")
    print("| variant | what ran | UNet passes (fwd / bwd) | peak RSS MB | ratio to reference | seconds |")
    print("|---|---|---:|---:|---:|---:|")
    print(f"| reference-style | teacher copy; 3 iterations, each: 2 CFG steps, 2 teacher passes, student step | "
          f"{wref['forward']} / {wref['backward']} | {wref['maxrss_mb']:.0f} | 1.000 | {wref['seconds']:.1f} |")
    print(f"| ours, erase() defaults | pool (frozen_batch auto), 3 iterations x batch 1, 4-step schedule, "
          f"checkpointing {wours['gradient_checkpointing']} | {wours['forward']} / {wours['backward']} | "
          f"{wours['maxrss_mb']:.0f} | {wours['maxrss_mb'] / wref['maxrss_mb']:.3f} | {wours['seconds']:.1f} |")
    whole_ratio = wours["maxrss_mb"] / wref["maxrss_mb"]
    print(f"\n- at most 0.6x the reference's peak memory (whole erasure): {whole_ratio:.3f} "
          f"({'HOLDS' if whole_ratio <= 0.6 else 'DOES NOT HOLD'})")
    table = memory_table(rows["sd15-mem-reference"], rows["sd15-mem-ours"], rows["sd15-mem-ours-no-gc"], wref, wours)
    print(f"\n# Summary ({TABLE})\n\n{table}")
    if args.docs:
        write_docs_table(args.docs, TABLE, table, command=command)
        print(f"wrote {TABLE} into {args.docs}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--world-iterations", type=int, default=200)
    p.add_argument("--count-iterations", type=int, default=1000,
                   help="iterations (batch 1) of ours on the world for the pass counts per sample")
    p.add_argument("--skip-sd15", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny numbers, for a smoke check")
    p.add_argument("--memory-only", action="store_true",
                   help="only the SD 1.5 peak memory: one training step (reference, ours, ours without gradient "
                        "checkpointing), then a whole short erasure (reference-style loop vs erase())")
    p.add_argument("--sd15-latent", type=int, default=64, help="SD 1.5 latent size (64 = 512 px)")
    p.add_argument("--sd15-cfg-steps", type=int, default=2, help="CFG steps of the timed SD 1.5 iteration")
    p.add_argument("--pool-batches", type=int, nargs="+", default=[1, 2, 4], help=argparse.SUPPRESS)
    p.add_argument("--docs", nargs="?", const="docs/methods.md", default=None, metavar="FILE",
                   help=f"with --memory-only, also write its summary table between the {TABLE} markers in FILE "
                        "(default docs/methods.md)")
    p.add_argument("--_variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._variant:
        result = VARIANTS[args._variant](args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    command = "python scripts/bench_esd.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.docs:
        if not args.memory_only:
            p.error(f"--docs writes the {TABLE} table, which only --memory-only measures")
        check_markers(args.docs, [TABLE])
    if args.quick:
        args.world_iterations, args.count_iterations = 10, 60
        args.sd15_latent, args.sd15_cfg_steps, args.pool_batches = 8, 1, [1, 2, 4]
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.memory_only:
        return memory_only(args, command)
    print(f"# ESD benchmark: ours (esd-x, sampling=frozen) vs a reference-style loop ({args.threads} thread(s)"
          f"{', --quick' if args.quick else ''})")
    w = part1(args)
    counts = pass_counts(args)
    s = None if args.skip_sd15 else part2(args, counts)

    print("\n## Claims\n")
    world_ratio = w["ref"]["total"] / w["ours"]["total"]
    per_sample_ratio = counts["ref_total"] / counts["total_per_sample"]
    checks = [world_ratio, per_sample_ratio] + ([s["ref_iter"] / s["ours_sample"]] if s else [])
    text = (f"world {args.world_iterations} samples, measured passes: {world_ratio:.2f}x; "
            f"{counts['n']} samples, passes per sample: {per_sample_ratio:.2f}x")
    if s:
        text += f"; SD 1.5 shape, estimated seconds per sample: {s['ref_iter'] / s['ours_sample']:.2f}x"
    print(f"- at least 5x less UNet compute per erasure: {'HOLDS' if min(checks) >= 5 else 'DOES NOT HOLD'} "
          f"({text})")
    if s:
        mem = s["mem_ours"]["maxrss_mb"] / s["mem_ref"]["maxrss_mb"]
        with_pool = s["pool_peak_frozen"] / s["mem_ref"]["maxrss_mb"]
        print(f"- at most 0.6x the reference's peak memory: {'HOLDS' if mem <= 0.6 else 'DOES NOT HOLD'} "
              f"(SD 1.5 shape, training step, peak RSS ours/reference {mem:.3f}); counting ours' pool building at "
              f"batch {FROZEN_BATCH} (extrapolated): {with_pool:.3f} ({'holds' if with_pool <= 0.6 else 'does not hold'})")
    else:
        print("- at most 0.6x the reference's peak memory: not checked (--skip-sd15; the world's RSS is dominated "
              "by the Python/torch runtime)")
    log("done")
    return 0


if __name__ == "__main__":
    script_main(main)
