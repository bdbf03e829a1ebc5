"""Write the built-in worlds' prompt sets to erasure/data/prompts/shapeworld{,2}/ (deterministic: same seed, same files).

    python scripts/make_world_prompts.py            # write (refuses to replace files without --force)
    python scripts/make_world_prompts.py --force    # regenerate the committed CSVs
    python scripts/make_world_prompts.py --check    # exit 1 if the packaged CSVs differ from a fresh build

The sets themselves are defined in erasure/evaluation/world_prompts.py. ``--check`` reads the prompt sets
the installed package ships (importlib.resources), so it checks a wheel install as well as a checkout;
writing goes to this checkout's package data folder unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from erasure.evaluation.phrasing import phrasing_prompt_sets
from erasure.evaluation.prompts import PACKAGED_PROMPTS
from erasure.evaluation.world2_prompts import world2_prompt_sets
from erasure.evaluation.world_prompts import world_prompt_sets

# Where the committed CSVs live in a checkout (the source of the package data).
CHECKOUT_PROMPTS = Path(__file__).resolve().parents[1] / "erasure" / "data" / "prompts"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="prompts folder (default: erasure/data/prompts/ of this checkout; with --check, "
                             "the installed package's prompt sets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace existing CSVs")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = parser.parse_args(argv)

    sets = {**world_prompt_sets(seed=args.seed, world=1), **phrasing_prompt_sets(seed=args.seed, world=1),
            **world2_prompt_sets(seed=args.seed)}
    if args.check:
        root = args.out if args.out is not None else PACKAGED_PROMPTS
        with tempfile.TemporaryDirectory() as tmp:
            stale = []
            for relative, prompt_set in sets.items():
                fresh = prompt_set.to_csv(Path(tmp) / relative)
                committed = root.joinpath(*relative.split("/"))
                if not committed.is_file() or committed.read_bytes() != fresh.read_bytes():
                    stale.append(relative)
        for relative in stale:
            print(f"differs: {root.joinpath(*relative.split('/'))}")
        print(f"{len(sets) - len(stale)}/{len(sets)} prompt sets up to date in {root}")
        return 1 if stale else 0
    out = args.out if args.out is not None else CHECKOUT_PROMPTS
    existing = [relative for relative in sets if (out / relative).exists()]
    if existing and not args.force:
        print(f"error: {len(existing)} prompt sets already exist in {out}; pass --force to replace them",
              file=sys.stderr)
        return 2
    for relative, prompt_set in sets.items():
        prompt_set.to_csv(out / relative, overwrite=args.force)
    print(f"wrote {len(sets)} prompt sets ({sum(len(s) for s in sets.values())} prompts) to {out}/shapeworld{{,2}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
