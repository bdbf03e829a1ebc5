"""Train the built-in world (shapeworld) from scratch, resumably, and install it into the package.

    python scripts/train_world.py                      # all stages, ~1.5 h on 2 CPU cores
    python scripts/train_world.py --stages clip,vae    # some stages (e.g. in two shells at once)
    python scripts/train_world.py --scale 0.1          # a short run, to check the bars first

Interrupted? Run the same command again: every stage resumes from its last checkpoint.
Logs: <run>/<stage>/log.jsonl; configs: <run>/<stage>/config.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.world import assemble, models  # noqa: E402
from erasure.world import train as T  # noqa: E402
from erasure.offline import clip_tokenizer  # noqa: E402

ALL = ("clip", "vae", "clip_image", "classifier", "unet", "assemble")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/world", help="folder for checkpoints, logs and stage outputs")
    p.add_argument("--stages", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps (0.1 = quick check)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default=None, help="where 'assemble' writes the world (default: inside the package)")
    args = p.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in ALL]
    if unknown:
        p.error(f"unknown stage(s) {unknown}; choose from {', '.join(ALL)}")
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    tok = clip_tokenizer(run / "tokenizer")
    cfgs = {k: dataclasses.replace(v, steps=max(1, int(v.steps * args.scale))) for k, v in T.DEFAULT_STAGES.items()}

    if "clip" in stages:
        clip = T.train_clip(run, cfgs["clip"], tok)
        clip.save_pretrained(run / "clip" / "model")
    if "vae" in stages:
        vae = T.train_vae(run, cfgs["vae"])
        vae.save_pretrained(run / "vae" / "model")
    if "clip_image" in stages:
        from transformers import CLIPModel

        clip = T.train_clip_image(run, cfgs["clip_image"], tok, CLIPModel.from_pretrained(run / "clip" / "model"))
        clip.save_pretrained(run / "clip_image" / "model")
    if "classifier" in stages:
        clf = T.train_classifier(run, cfgs["classifier"])
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in clf.state_dict().items()}, str(run / "classifier" / "model.safetensors"))
    if "unet" in stages:
        from diffusers import AutoencoderKL
        from transformers import CLIPModel

        clip = CLIPModel.from_pretrained(run / "clip" / "model")
        vae = AutoencoderKL.from_pretrained(run / "vae" / "model").eval()
        unet, scaling = T.train_unet(run, cfgs["unet"], tok, clip.text_model, vae)
        unet.save_pretrained(run / "unet" / "model")
    if "assemble" in stages:
        out = Path(args.out) if args.out else assemble.DEFAULT_WORLD_DIR
        assemble.assemble_world(run, out, stage_configs={k: dataclasses.asdict(v) for k, v in cfgs.items()})
        print(json.dumps({"assembled": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
