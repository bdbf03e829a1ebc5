"""Print pip constraints that pin every `>=` lower bound of pyproject.toml's dependencies (`pkg>=1.2` -> `pkg==1.2`),
and of the optional extras named with `--extra NAME` (repeatable).

The oldest-versions job (`make test-oldest`) installs erasure (with the extras it names) under these constraints,
so the lower bounds in pyproject.toml are the versions the fast tests actually ran on. torch and torchvision are
left out: the job keeps the local pair the Makefile installs (torch==2.14.1, torchvision==0.29.1).

    python .ci/lower_bounds.py [pyproject.toml] [--extra unlearncanvas] > lower-bounds.txt
"""

from __future__ import annotations

import re
import sys
import tomllib

KEPT = {"torch", "torchvision"}
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9._-]+)\s*(\[[^\]]*\])?\s*(.*)$")


def lower_bound_pins(dependencies: list[str]) -> list[str]:
    """``name==lower`` for each requirement with a ``>=`` bound (markers and upper bounds are dropped)."""
    pins = []
    for requirement in dependencies:
        name, _, specifiers = REQUIREMENT.match(requirement.split(";")[0]).groups()
        lower = re.search(r">=\s*([^,\s]+)", specifiers)
        if lower and name.lower() not in KEPT:
            pins.append(f"{name}=={lower.group(1)}")
    return pins


def main(argv: list[str]) -> int:
    args, extras = list(argv[1:]), []
    while "--extra" in args:
        at = args.index("--extra")
        if at + 1 >= len(args):
            print("--extra needs the name of an optional-dependencies group", file=sys.stderr)
            return 2
        extras.append(args.pop(at + 1))
        args.pop(at)
    path = args[0] if args else "pyproject.toml"
    with open(path, "rb") as fh:
        project = tomllib.load(fh)["project"]
    dependencies = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            print(f"{path} has no optional-dependencies group {extra!r} (groups: {', '.join(optional)})", file=sys.stderr)
            return 2
        dependencies += optional[extra]
    print("\n".join(lower_bound_pins(dependencies)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
