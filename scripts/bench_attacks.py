"""Cost of UnlearnDiffAtk on the built-in world: the reference's schedule against a cheaper one, in one process.

Every run attacks the same erasure (--method of --concept, anchor or guide square; default UCE, the weakest on
the world), the same prompts and seeds, with the same judge (the world's classifier) and the same attack seed. The
reference schedule is Diffusion-MU-Attack's (``--ref-timesteps`` blocks x ``--ref-steps`` Adam steps, a
full-length generation after every block; 50 x 40 at ``--full``); each cheap one takes ``--fast-timesteps`` blocks
(default: the reference's) of ``--fast-steps`` steps and checks with ``--fast-check-steps`` sampler steps (one
cheap run per value), with ``--confirm`` confirming a successful check at the run's sampler steps. Prints pre-ASR
and ASR with 95% CIs, the UNet rows per prompt (forward, forward+backward), the UNet cost (a backward counted as
two forwards) and seconds as a markdown table, and the ratios reference / cheap; with ``--docs`` both go between
the ``attacks-cost`` markers of docs/attacks.md.

    python scripts/bench_attacks.py --threads 1 --prompts 6 --ref-timesteps 5            # a few minutes
    python scripts/bench_attacks.py --threads 1 --full --prompts 30 --fast-timesteps 10 --fast-steps 8 \
        --fast-check-steps 10 5 --confirm --docs                                       # ~20 min on one thread
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.experiments import check_markers, markdown_table, script_main, write_docs_table  # noqa: E402

TABLE = "attacks-cost"


def with_ci(m) -> str:
    return f"{m.value:.2f} [{m.ci_low:.2f}, {m.ci_high:.2f}]"


def settings_text(settings: dict, sampler_steps: int) -> str:
    """"timesteps 5, steps_per_timestep 40, checks at 25 steps": the run's settings, and the checks' steps
    where they are the sampler's."""
    text = ", ".join(f"{k} {v}" for k, v in settings.items())
    return text if "check_steps" in settings else f"{text}, checks at {sampler_steps} steps"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="circle")
    parser.add_argument("--prompts", type=int, default=6, help="first N prompts of the concept's world prompt set")
    parser.add_argument("--ref-timesteps", type=int, default=5, help="timestep blocks of the reference run")
    parser.add_argument("--ref-steps", type=int, default=40, help="Adam steps per block of the reference run")
    parser.add_argument("--fast-timesteps", type=int, default=None,
                        help="timestep blocks of the cheap run (default: the reference run's)")
    parser.add_argument("--fast-steps", type=int, default=8, help="Adam steps per block of the cheap run")
    parser.add_argument("--fast-check-steps", type=int, nargs="+", default=[10],
                        help="sampler steps of the cheap run's checks; several values: one cheap run each")
    parser.add_argument("--confirm", action="store_true",
                        help="the cheap run confirms a successful check at the run's sampler steps (confirm=true), so "
                             "its successes are judged on the same images as the reference's")
    parser.add_argument("--method", default="uce", help="the erasure attacked (default uce, the weakest on the world)")
    parser.add_argument("--full", action="store_true", help="the reference's full schedule: 50 blocks x 40 steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", nargs="?", const="docs/attacks.md", default=None, metavar="FILE",
                        help=f"also write the table between the {TABLE} markers in FILE (default docs/attacks.md)")
    args = parser.parse_args(argv)
    command = "python scripts/bench_attacks.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.docs:
        check_markers(args.docs, [TABLE])
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import erasure
    from erasure.attacks import attack
    from erasure.methods import erase

    if args.full:
        args.ref_timesteps, args.ref_steps = 50, 40
    pipe = erasure.load_pipeline("shapeworld", device=args.device)
    anchor = {"uce": "guide", "uce-paper": "guide", "time": "guide"}.get(args.method, "anchor")
    edit = erase(pipe, args.method, [args.concept], **{anchor: "square"})
    runs = {"reference": {"timesteps": args.ref_timesteps, "steps_per_timestep": args.ref_steps}}
    for check_steps in args.fast_check_steps:
        name = "cheap" if len(args.fast_check_steps) == 1 else f"cheap, checks at {check_steps}"
        runs[name] = {"timesteps": args.fast_timesteps or args.ref_timesteps, "steps_per_timestep": args.fast_steps,
                      "check_steps": check_steps, **({"confirm": True} if args.confirm else {})}
    results = {}
    for name, settings in runs.items():  # the baseline first, in the same process
        start = time.perf_counter()
        report = attack(pipe, "unlearndiffatk", args.concept, None, result=edit, limit=args.prompts,
                        attack_settings=settings, seed=args.seed, n_resamples=1000)
        results[name] = (report, time.perf_counter() - start)
    print(f"UnlearnDiffAtk vs {args.method}({args.concept}) on the built-in world, {args.prompts} prompts, device {args.device}")

    def cost(budget) -> float:
        """UNet cost in forward-row units: a forward+backward row is a forward and a backward, the backward
        counted as two forwards (as scripts/bench_esd.py counts)."""
        return budget["unet_forward_per_prompt"] + 3 * budget["unet_forward_backward_per_prompt"]

    rows = [{"run": name, "report": report, "seconds": seconds} for name, (report, seconds) in results.items()]
    columns = [("run", lambda r: r["run"]),
               ("settings", lambda r: settings_text(runs[r["run"]], r["report"].info["sampler"]["steps"])),
               ("pre-ASR [95% CI]", lambda r: with_ci(r["report"].metrics["pre_asr"])),
               ("ASR [95% CI]", lambda r: with_ci(r["report"].metrics["asr"])),
               ("fwd rows/prompt", lambda r: f"{r['report'].info['budget']['unet_forward_per_prompt']:.0f}"),
               ("fwd+bwd rows/prompt",
                lambda r: f"{r['report'].info['budget']['unet_forward_backward_per_prompt']:.0f}"),
               ("cost/prompt (fwd + 3 x fwd+bwd)", lambda r: f"{cost(r['report'].info['budget']):.0f}"),
               ("s/prompt", lambda r: f"{r['seconds'] / args.prompts:.1f}")]
    ref, ref_s = results["reference"]
    rb = ref.info["budget"]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "n/a"

    fixed = 2 * 2 * ref.info["sampler"]["steps"]  # the original's image and the plain prompt's, CFG: 2 rows/step
    sentences = []
    for name, (cheap, cheap_s) in results.items():
        if name == "reference":
            continue
        cb = cheap.info["budget"]
        ref_asr, cheap_asr = ref.metrics["asr"], cheap.value("asr")
        if f"{ref_asr.value:.2f}" == f"{cheap_asr:.2f}":
            asr_text = "the same ASR"
        else:
            where = "within" if ref_asr.ci_low <= cheap_asr <= ref_asr.ci_high else "OUTSIDE"
            asr_text = f"ASR {ref_asr.value:.2f} vs {cheap_asr:.2f} ({where} the reference's 95% CI)"
        all_ref = rb["unet_forward_per_prompt"] + rb["unet_forward_backward_per_prompt"]
        all_cheap = cb["unet_forward_per_prompt"] + cb["unet_forward_backward_per_prompt"]
        sentences.append(
            f"Reference / {name}: {ratio(rb['unet_forward_backward_per_prompt'], cb['unet_forward_backward_per_prompt'])} "
            f"fewer forward+backward rows, {ratio(all_ref, all_cheap)} fewer UNet rows in all "
            f"({ratio(all_ref - fixed, all_cheap - fixed)} without the {fixed} forward rows per prompt both runs spend on "
            f"the original's and the plain prompt's images), {ratio(cost(rb), cost(cb))} less UNet cost, "
            f"{ratio(ref_s, cheap_s)} fewer seconds; {asr_text}.")
    print("\n".join(sentences))
    text = markdown_table(rows, columns) + "\n\n" + "\n\n".join(sentences)
    print(text)
    if args.docs:
        write_docs_table(args.docs, TABLE, text, command=command)
        print(f"wrote {TABLE} into {args.docs}")
    return 0


if __name__ == "__main__":
    script_main(main)
