"""Write the built-in world's prompt sets to prompts/shapeworld/ (deterministic: same seed, same files).

    python scripts/make_world_prompts.py            # write (refuses to replace files without --force)
    python scripts/make_world_prompts.py --force    # regenerate the committed CSVs
    python scripts/make_world_prompts.py --check    # exit 1 if the committed CSVs differ from a fresh build

The sets themselves are defined in erasure/evaluation/world_prompts.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from erasure.evaluation.prompts import PROMPTS_DIR
from erasure.evaluation.world_prompts import world_prompt_sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROMPTS_DIR, help="prompts folder (default: the repo's prompts/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace existing CSVs")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = parser.parse_args(argv)

    sets = world_prompt_sets(seed=args.seed)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            stale = []
            for relative, prompt_set in sets.items():
                fresh = prompt_set.to_csv(Path(tmp) / relative)
                committed = args.out / relative
                if not committed.is_file() or committed.read_bytes() != fresh.read_bytes():
                    stale.append(relative)
        for relative in stale:
            print(f"differs: {args.out / relative}")
        print(f"{len(sets) - len(stale)}/{len(sets)} prompt sets up to date")
        return 1 if stale else 0
    existing = [relative for relative in sets if (args.out / relative).exists()]
    if existing and not args.force:
        print(f"error: {len(existing)} prompt sets already exist in {args.out}; pass --force to replace them",
              file=sys.stderr)
        return 2
    for relative, prompt_set in sets.items():
        prompt_set.to_csv(args.out / relative, overwrite=args.force)
    print(f"wrote {len(sets)} prompt sets ({sum(len(s) for s in sets.values())} prompts) to {args.out / 'shapeworld'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
