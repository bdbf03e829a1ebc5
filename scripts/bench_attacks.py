"""Cost of UnlearnDiffAtk on the built-in world: the reference's schedule against a cheaper one, in one process.

Both runs attack the same erasure (UCE of --concept, guide square), the same prompts and seeds, with the same
judge (the world's classifier) and the same attack seed. The reference schedule is Diffusion-MU-Attack's
(``--ref-timesteps`` blocks x ``--ref-steps`` Adam steps, a full-length generation after every block; 50 x 40 at
``--full``); the cheap one keeps the blocks but takes ``--fast-steps`` steps per block and checks with
``--fast-check-steps`` sampler steps. Prints pre-ASR and ASR with 95% CIs and the UNet rows per prompt (forward,
forward+backward) and seconds of each, and the ratios reference / cheap.

    python scripts/bench_attacks.py --threads 1 --prompts 6 --ref-timesteps 5
    python scripts/bench_attacks.py --full --prompts 40 --device cuda      # the reference's 50 x 40
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concept", default="circle")
    parser.add_argument("--prompts", type=int, default=6, help="first N prompts of the concept's world prompt set")
    parser.add_argument("--ref-timesteps", type=int, default=5, help="timestep blocks of the reference run")
    parser.add_argument("--ref-steps", type=int, default=40, help="Adam steps per block of the reference run")
    parser.add_argument("--fast-steps", type=int, default=8, help="Adam steps per block of the cheap run")
    parser.add_argument("--fast-check-steps", type=int, default=10, help="sampler steps of the cheap run's checks")
    parser.add_argument("--full", action="store_true", help="the reference's full schedule: 50 blocks x 40 steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import erasure
    from erasure.attacks import attack
    from erasure.methods import erase

    if args.full:
        args.ref_timesteps, args.ref_steps = 50, 40
    pipe = erasure.load_pipeline("shapeworld", device=args.device)
    edit = erase(pipe, "uce", [args.concept], guide="square")
    runs = {
        "reference": {"timesteps": args.ref_timesteps, "steps_per_timestep": args.ref_steps},
        "cheap": {"timesteps": args.ref_timesteps, "steps_per_timestep": args.fast_steps,
                  "check_steps": args.fast_check_steps},
    }
    results = {}
    for name, settings in runs.items():  # the baseline first, in the same process
        start = time.perf_counter()
        report = attack(pipe, "unlearndiffatk", args.concept, None, result=edit, limit=args.prompts,
                        attack_settings=settings, seed=args.seed, n_resamples=1000)
        results[name] = (report, time.perf_counter() - start)
    print(f"UnlearnDiffAtk vs UCE({args.concept}) on the built-in world, {args.prompts} prompts, device {args.device}")
    print("| run | settings | pre-ASR [95% CI] | ASR [95% CI] | fwd rows/prompt | fwd+bwd rows/prompt | s/prompt |")
    print("|---|---|---|---|---|---|---|")
    for name, (report, seconds) in results.items():
        b = report.info["budget"]
        pre, asr = report.metrics["pre_asr"], report.metrics["asr"]
        print(f"| {name} | {runs[name]} | {pre.value:.2f} [{pre.ci_low:.2f}, {pre.ci_high:.2f}] | {asr.value:.2f} "
              f"[{asr.ci_low:.2f}, {asr.ci_high:.2f}] | {b['unet_forward_per_prompt']:.0f} | "
              f"{b['unet_forward_backward_per_prompt']:.0f} | {seconds / args.prompts:.1f} |")
    (ref, ref_s), (cheap, cheap_s) = results["reference"], results["cheap"]
    rb, cb = ref.info["budget"], cheap.info["budget"]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "n/a"

    print(f"\nratio reference / cheap: fwd+bwd rows {ratio(rb['unet_forward_backward_per_prompt'], cb['unet_forward_backward_per_prompt'])}, "
          f"all UNet rows {ratio(rb['unet_forward_per_prompt'] + rb['unet_forward_backward_per_prompt'], cb['unet_forward_per_prompt'] + cb['unet_forward_backward_per_prompt'])}, "
          f"seconds {ratio(ref_s, cheap_s)}; ASR {ref.value('asr'):.2f} vs {cheap.value('asr'):.2f} "
          f"(within the reference's CI: {ref.metrics['asr'].ci_low <= cheap.value('asr') <= ref.metrics['asr'].ci_high})")


if __name__ == "__main__":
    main()
