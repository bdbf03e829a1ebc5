"""Print pip constraints that pin every `>=` lower bound of pyproject.toml's dependencies (`pkg>=1.2` -> `pkg==1.2`).

The oldest-versions job (`make test-oldest`) installs erasure under these constraints, so the lower bounds in
pyproject.toml are the versions the fast tests actually ran on. torch and torchvision are left out: the job
keeps the local pair the Makefile installs (torch==2.14.1, torchvision==0.29.1).

    python .ci/lower_bounds.py [pyproject.toml] > lower-bounds.txt
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
    path = argv[1] if len(argv) > 1 else "pyproject.toml"
    with open(path, "rb") as fh:
        dependencies = tomllib.load(fh)["project"]["dependencies"]
    print("\n".join(lower_bound_pins(dependencies)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
