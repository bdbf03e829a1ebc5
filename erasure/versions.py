"""Package versions recorded in the metadata of everything erasure writes."""

from __future__ import annotations


def package_versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    import erasure

    return {"erasure": erasure.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}
