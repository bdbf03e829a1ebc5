"""Train the built-in world (shapeworld) from scratch, resumably, and install it into the package.

    python scripts/train_world.py                      # all stages, about 85 min on 2 CPU cores
    python scripts/train_world.py --stages clip,vae    # some stages, in this process
    python scripts/train_world.py --scale 0.1          # a short run, to check the bars first

All stages run as two single-threaded lanes, because on a small CPU two processes with one
thread each get more done than one process with two threads:
    lane A: clip -> clip_image -> classifier
    lane B: vae -> (waits for clip) unet, which restarts with 2 threads once lane A is done
then assemble. ``--sequential`` runs them one after another in this process instead.

Interrupted? Run the same command again: every stage resumes from its last checkpoint.
Logs: <run>/<stage>/log.jsonl; configs: <run>/<stage>/config.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.world import assemble  # noqa: E402
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
    p.add_argument("--sequential", action="store_true", help="run all stages in this process, one by one")
    p.add_argument("--world", type=int, choices=sorted(T.STAGES), default=1,
                   help="which world: 1 (8 shapes) or 2 (24 objects, identities, the halo)")
    p.add_argument("--steps", action="append", default=[], metavar="STAGE=N",
                   help="override a stage's step count, e.g. unet=9000; with an existing checkpoint this continues "
                        "the run (the lr schedule is recomputed for the new length, and the change is logged)")
    p.add_argument("--lr", action="append", default=[], metavar="STAGE=LR",
                   help="override a stage's peak learning rate (logged like --steps)")
    p.add_argument("--seed", action="append", default=[], metavar="STAGE=N",
                   help="override a stage's seed (data order and noise; the UNet's latent pool is drawn from it), "
                        "e.g. for a continuation that should not replay its init's batches (logged like --steps)")
    p.add_argument("--init-unet", default=None, metavar="DIR",
                   help="start the UNet stage from a trained UNet folder instead of random weights, keeping its "
                        "latent scaling factor (read from DIR/../vae/config.json); used to adapt a trained world "
                        "to a renderer change without retraining every stage (logged)")
    args = p.parse_args(argv)
    if args.stages == ",".join(ALL) and not args.sequential:
        if args.steps or args.lr or args.seed or args.init_unet:
            p.error("--steps, --lr, --seed and --init-unet change single stages; name them with --stages "
                    "(e.g. --stages unet) or add --sequential")
        return run_in_lanes(args)
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in ALL]
    if unknown:
        p.error(f"unknown stage(s) {unknown}; choose from {', '.join(ALL)}")
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    cfgs = {k: dataclasses.replace(v, steps=max(1, int(v.steps * args.scale))) for k, v in T.STAGES[args.world].items()}
    overrides: list[dict] = []  # written only once every flag is valid: a bad flag leaves nothing behind

    def log_override(**row) -> None:  # recorded in world.json's training_overrides by assemble
        overrides.append({**row, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})

    for item in args.steps:
        name, _, n = item.partition("=")
        if name not in cfgs or not n.isdigit():
            p.error(f"--steps wants STAGE=N with STAGE one of {', '.join(cfgs)}; got {item!r}")
        cfgs[name] = dataclasses.replace(cfgs[name], steps=int(n))
        log_override(stage=name, steps=int(n))
    for item in args.lr:
        name, _, lr = item.partition("=")
        try:
            value = float(lr)
        except ValueError:
            value = -1.0
        if name not in cfgs or value <= 0:
            p.error(f"--lr wants STAGE=LR with STAGE one of {', '.join(cfgs)} and LR > 0; got {item!r}")
        cfgs[name] = dataclasses.replace(cfgs[name], lr=value)
        log_override(stage=name, lr=value)
    for item in args.seed:
        name, _, n = item.partition("=")
        if name not in cfgs or not n.isdigit():
            p.error(f"--seed wants STAGE=N with STAGE one of {', '.join(cfgs)}; got {item!r}")
        cfgs[name] = dataclasses.replace(cfgs[name], seed=int(n))
        log_override(stage=name, seed=int(n))
    if args.init_unet:
        init = Path(args.init_unet)
        if not (init / "config.json").exists():
            p.error(f"--init-unet {init}: no config.json there; give a diffusers UNet folder, e.g. "
                    "erasure/world/weights/pipeline/unet")
        cfgs["unet"] = dataclasses.replace(cfgs["unet"], extra=dict(cfgs["unet"].extra, init=str(init)))
        log_override(stage="unet", init=str(init), init_sha256=T.folder_sha256(init))
    run.mkdir(parents=True, exist_ok=True)
    if overrides:
        with open(run / "steps_overrides.jsonl", "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in overrides)
    tok = clip_tokenizer(run / "tokenizer")
    if args.scale < 1:  # a quick check also encodes a smaller latent pool
        unet_extra = dict(cfgs["unet"].extra, pool=max(1024, int(cfgs["unet"].extra["pool"] * args.scale)))
        cfgs["unet"] = dataclasses.replace(cfgs["unet"], extra=unet_extra)

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


def run_in_lanes(args) -> int:
    """All stages as two single-threaded lanes of subprocesses (see the module docstring)."""
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)

    def start(stage: str, threads: int) -> subprocess.Popen:
        cmd = [sys.executable, __file__, "--run", str(run), "--stages", stage, "--threads", str(threads),
               "--scale", str(args.scale), "--world", str(args.world)]
        log = open(run / f"{stage}.out", "a")
        print(f"[lanes] start {stage} ({threads} thread{'s' if threads > 1 else ''}); output in {log.name}", flush=True)
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def finish(proc: subprocess.Popen, stage: str) -> None:
        if proc.wait() != 0:
            raise SystemExit(f"stage {stage} failed (exit {proc.returncode}); see {run / (stage + '.out')}, "
                             "then run the same command again to resume")

    t0 = time.time()
    lane_a, lane_b = start("clip", 1), start("vae", 1)
    finish(lane_a, "clip")
    lane_a = start("clip_image", 1)
    finish(lane_b, "vae")
    unet = start("unet", 1)
    finish(lane_a, "clip_image")
    lane_a = start("classifier", 1)
    finish(lane_a, "classifier")
    if unet.poll() is None:
        # lane A is done: give the UNet both cores, right after a checkpoint so nothing is lost
        ckpt = run / "unet" / "checkpoint.safetensors"
        seen = ckpt.stat().st_mtime if ckpt.exists() else 0.0
        while unet.poll() is None and (ckpt.stat().st_mtime if ckpt.exists() else 0.0) == seen:
            time.sleep(2)
        if unet.poll() is None:
            time.sleep(5)
            unet.terminate()
            unet.wait()
            unet = start("unet", 2)
    finish(unet, "unet")
    code = main(["--run", str(run), "--stages", "assemble", "--scale", str(args.scale), "--world", str(args.world)]
                + (["--out", args.out] if args.out else []))
    print(f"[lanes] all stages done in {(time.time() - t0) / 60:.1f} min", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
