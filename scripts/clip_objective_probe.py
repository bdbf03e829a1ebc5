"""World 2's CLIP: does object zero-shot rise when the contrastive loss also sees object-only captions?

Continues the CLIP of a trained world 2 (``--world``, e.g. worlds/shapeworld2) with the world's contrastive loss
(``erasure.world.train._clip_step_fn``'s truth-table targets) while a fraction of the object scenes in each batch
(``--object-fraction``) is captioned by its object alone, in the world's caption grammar ("a photo of a hexagon").
What trains: the image tower and both projections, and with ``--train-text`` the text transformer too (a
judge-only copy: the pipeline's text encoder is never changed; the token embedding stays frozen). Every
``--every`` steps it prints CLIP zero-shot on fresh renders for every attribute
(``erasure.world.quality.clip_zero_shot_accuracy_2``). Nothing is written into the world: a probe for the
training recipe (issue 20).

    python scripts/clip_objective_probe.py --world worlds/shapeworld2 --steps 800 --object-fraction 0.5
    python scripts/clip_objective_probe.py --world worlds/shapeworld2 --steps 800 --object-fraction 0.5 --train-text
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.experiments import script_main  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default="worlds/shapeworld2", help="a world 2 folder (pipeline/, clip.json, ...)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--object-fraction", type=float, default=0.5,
                   help="share of the object scenes (not identities) captioned by their object alone")
    p.add_argument("--train-text", action="store_true", help="also train the text transformer (a judge-only copy)")
    p.add_argument("--renders", type=int, default=600, help="fresh renders per zero-shot measurement")
    p.add_argument("--every", type=int, default=200)
    p.add_argument("--seed", type=int, default=31)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from erasure.models import load_pipeline
    from erasure.world import captions as cap, train as T
    from erasure.world.instruments import load_clip
    from erasure.world.quality import clip_zero_shot_accuracy_2
    from erasure.world.render import WORLD2

    torch.set_num_threads(args.threads)
    tok = load_pipeline(Path(args.world) / "pipeline").tokenizer
    clip = load_clip(args.world).train().requires_grad_(False)
    parts = [clip.vision_model, clip.visual_projection, clip.text_projection]
    if args.train_text:
        parts += [clip.text_model.encoder, clip.text_model.final_layer_norm]
    for part in parts:
        part.requires_grad_(True)
    clip.logit_scale.requires_grad_(True)
    cfg = T.StageConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=50, seed=args.seed, world=2)
    blank = {"shape": None, "colour": None, "texture": None, "background": None}

    def caption(scene, rng):  # the object alone for a share of the object scenes, else the training caption
        if scene.shape is not None and scene.identity is None and rng.random() < args.object_fraction:
            named = {**blank, "shape": scene.shape}
            return cap._world2_caption(named, rng, True, None), {**named, "identity": None, "halo": None}
        return cap.world_training_caption(scene, rng, 2)

    step_fn = T._clip_step_fn(clip, tok, cfg, caption=caption)  # the world's loss and truth-table targets

    def report(step: int, seconds: float) -> None:
        clip.eval()
        with torch.no_grad():
            acc = clip_zero_shot_accuracy_2(clip, tok, WORLD2, n=args.renders)
        clip.train()
        print(f"step {step} ({seconds:.0f} s): " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in acc.items()), flush=True)

    params = [q for q in clip.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    print(f"trainable parameters: {sum(q.numel() for q in params):,}; object-only captions for "
          f"{args.object_fraction:.0%} of object scenes; text transformer {'trains' if args.train_text else 'frozen'}")
    t0 = time.perf_counter()
    report(0, 0.0)
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = T._lr_at(step, cfg)
        loss = step_fn(rng, step)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % args.every == 0 or step + 1 == args.steps:
            report(step + 1, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    script_main(main)
