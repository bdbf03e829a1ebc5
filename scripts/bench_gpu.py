"""Benchmark the SD 1.5-shaped path on a GPU: every dtype the precision policy supports, against baselines run
in the same process. Random weights of SD 1.5's real shape (UNet 860M, CLIP ViT-L/14 text encoder, 4-channel
VAE), so no checkpoint is needed; the numbers are time and memory, not quality.

Tables printed (markdown):
1. generation: 4 images x 25 DDIM steps at 512 px, ``erasure.generate_images`` vs one plain diffusers call (ratio);
2. erasure per method and dtype: wall time, peak CUDA memory, the ratio of each half dtype against fp32;
   ESD-x with the default memory settings (20 iterations, 10 DDIM steps, frozen pool), UCE, MACE (2 iterations).

    python scripts/bench_gpu.py                  # on CUDA (what scripts/gpu_check.sh runs)
    python scripts/bench_gpu.py --device cpu --tiny   # a smoke run of the same code on tiny shapes
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_pipeline(tiny: bool, device: str, dtype):
    import tempfile

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from erasure.offline import BOS_TOKEN_ID, CLIP_VOCAB_SIZE, EOS_TOKEN_ID, clip_tokenizer

    torch.manual_seed(0)
    width = 32 if tiny else 768
    unet = UNet2DConditionModel(
        sample_size=8 if tiny else 64, layers_per_block=2,
        block_out_channels=(32, 32, 64, 64) if tiny else (320, 640, 1280, 1280), norm_num_groups=8 if tiny else 32,
        cross_attention_dim=width, attention_head_dim=8)
    text = CLIPTextModel(CLIPTextConfig(
        hidden_size=width, num_hidden_layers=2 if tiny else 12, num_attention_heads=4 if tiny else 12,
        intermediate_size=64 if tiny else 3072, vocab_size=CLIP_VOCAB_SIZE, bos_token_id=BOS_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID, pad_token_id=EOS_TOKEN_ID, hidden_act="quick_gelu"))
    vae = AutoencoderKL(block_out_channels=(8, 16, 16, 16) if tiny else (128, 256, 512, 512),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2, norm_num_groups=8 if tiny else 32, latent_channels=4)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=clip_tokenizer(tempfile.mkdtemp()), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def peak_and_reset(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        return peak
    return float("nan")


def timed(fn, device: str):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (a smoke run, e.g. on the CPU)")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "fp16", "bf16"])
    p.add_argument("--esd-iterations", type=int, default=20)
    args = p.parse_args(argv)
    import torch

    from erasure import generate_images
    from erasure.generation import SamplerSettings
    from erasure.methods import erase

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to benchmark (run with --device cpu --tiny for a smoke run)")
        return 0
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    device = args.device
    print(f"device: {torch.cuda.get_device_name() if device.startswith('cuda') else device}; torch {torch.__version__}")
    gen_rows, method_rows = [], []
    for name in args.dtypes:
        pipe = build_pipeline(args.tiny, device, dtypes[name])
        settings = SamplerSettings(steps=25, guidance=7.5)
        prompts, seeds = ["a photo of a cat"] * 4, list(range(4))
        generate_images(pipe, prompts[:1], seeds[:1], settings, progress=False)  # warm-up (kernels, allocator)
        peak_and_reset(device)
        _, ours = timed(lambda: generate_images(pipe, prompts, seeds, settings, batch_size=4, progress=False), device)
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        _, plain = timed(lambda: pipe(prompts, num_inference_steps=25, guidance_scale=7.5, generator=gens,
                                      output_type="np"), device)
        gen_rows.append((name, ours, plain, peak_and_reset(device)))
        runs = {"uce": {}, "esd-x": {"iterations": args.esd_iterations, "ddim_steps": 10, "progress": False},
                "mace": {"iterations": 2, "images": 2, "batch_size": 2, "progress": False}}
        for method, kw in runs.items():
            result, seconds = timed(lambda: erase(pipe, method, "cat", **kw), device)
            result.apply(pipe)
            result.restore(pipe)
            method_rows.append((method, name, seconds, peak_and_reset(device)))
        pipe = None  # free the model before the next dtype loads
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    print("\n| dtype | erasure generate_images (s) | plain diffusers call (s) | ratio | peak memory (MiB) |")
    print("|---|---|---|---|---|")
    for name, ours, plain, peak in gen_rows:
        print(f"| {name} | {ours:.2f} | {plain:.2f} | {ours / plain:.2f}x | {peak:.0f} |")
    fp32 = {m: (s, mem) for m, d, s, mem in method_rows if d == "fp32"}
    print("\n| method | dtype | seconds | peak memory (MiB) | time vs fp32 | memory vs fp32 |")
    print("|---|---|---|---|---|---|")
    for method, name, seconds, peak in method_rows:
        base = fp32.get(method)
        ratio_t = f"{seconds / base[0]:.2f}x" if base else "-"
        ratio_m = f"{peak / base[1]:.2f}x" if base and base[1] == base[1] and base[1] > 0 else "-"
        print(f"| {method} | {name} | {seconds:.2f} | {peak:.0f} | {ratio_t} | {ratio_m} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
