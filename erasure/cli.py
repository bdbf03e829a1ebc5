"""The ``erasure`` command line: thin argparse subcommands over the Python API.

Exit codes: 0 success, 2 user error (one line on stderr, nothing half-written), 1 unexpected failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXAMPLES = """examples:
  erasure generate --prompt "a red star" --prompt "a striped blue heart" --num-seeds 4 --out outputs/demo
  erasure generate --model path/to/diffusers-folder --prompt "a photo of a cat" --steps 25
  erasure generate --model model.safetensors --config path/to/config-folder --prompt "a cat"
"""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="built-in world 'shapeworld' (default), a diffusers folder, a .safetensors file, or a Hub id in the local cache")
    p.add_argument("--config", default=None, help="local config folder for a single-file checkpoint (offline)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="fp32, fp16, bf16 (default: fp16 on cuda, fp32 on cpu)")
    p.add_argument("--allow-pickle", action="store_true", help="allow loading pickled .ckpt/.bin weights (unsafe)")


def _read_prompts(args) -> list[str]:
    from erasure.errors import ErasureError

    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise ErasureError(f"prompts file {path} not found; give a text file with one prompt per line")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ErasureError("no prompts given; use --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


def cmd_generate(args) -> int:
    from erasure.errors import ErasureError
    from erasure.generation import SamplerSettings, generate_images, save_generation
    from erasure.models import load_pipeline

    prompts = _read_prompts(args)
    if args.seeds:
        seeds = args.seeds
    else:
        if args.num_seeds < 1:
            raise ErasureError(f"--num-seeds must be >= 1 (got {args.num_seeds})")
        seeds = list(range(args.seed, args.seed + args.num_seeds))
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ErasureError(f"{out} already exists; choose another --out or pass --force to replace it")
    settings = SamplerSettings(steps=args.steps, guidance=args.guidance, negative_prompt=args.negative_prompt)
    settings.validate()
    pipe = load_pipeline(args.model, config=args.config, device=args.device, dtype=args.dtype,
                         allow_pickle=args.allow_pickle)
    all_prompts = [p for p in prompts for _ in seeds]
    all_seeds = [s for _ in prompts for s in seeds]
    images = generate_images(pipe, all_prompts, all_seeds, settings, batch_size=args.batch_size)
    save_generation(images, all_prompts, all_seeds, out, settings=settings, model=args.model or "shapeworld",
                    grid_shape=(len(prompts), len(seeds)), force=args.force)
    print(f"wrote {len(images)} images and {out / 'grid.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="erasure", description="Concept erasure for text-to-image diffusion models.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    g = sub.add_parser("generate", help="generate images for prompts (seeded), with a PNG grid",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(g)
    g.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    g.add_argument("--prompts-file", help="text file, one prompt per line")
    g.add_argument("--seeds", type=int, nargs="+", help="explicit seeds (one image per prompt and seed)")
    g.add_argument("--num-seeds", type=int, default=4, help="seeds --seed .. --seed+N-1 (default 4)")
    g.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    g.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    g.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--out", default="outputs/generate", help="output folder (default outputs/generate)")
    g.add_argument("--force", action="store_true", help="replace --out if it exists")
    g.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from erasure.errors import ErasureError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ErasureError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
