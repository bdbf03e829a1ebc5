"""The result of an erasure method: an :class:`Edit`, a frozen set of new weight values.

An edit names parameters by their path in the pipeline (``unet.<module>.weight``,
``text_encoder.<module>.weight``), holds their new values, the values they replace (in memory, for
``restore`` and exact low-rank conversion), the sha256 of each replaced value (so applying to the wrong
base model is refused), and the method, concepts and config that produced it.

    edit = erasure.erase(pipe, "uce", ["circle"])
    edit.apply(pipe)            # in place; edit.restore(pipe) undoes it
    edit.save("circle.edit.safetensors")
    factors = edit.low_rank()   # exact: {name: (up, down)} with up @ down == new - original
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from erasure.errors import ErasureError
from erasure.precision import tensor_sha256  # noqa: F401  (re-exported: the one value hash)

EDIT_FORMAT = "erasure.edit/1"



def _config_key(config: Mapping) -> str:
    """A config as it is saved (JSON: tuples become lists), so a loaded result equals the one saved."""
    return json.dumps(dict(config), sort_keys=True, default=str)


def _frozen(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


def svd_factors(delta: Tensor, rank: int | None = None, *, rtol: float = 1e-6) -> tuple[Tensor, Tensor]:
    """``(up, down)`` in float64 with ``up @ down`` the best rank-``rank`` approximation of ``delta``; with
    ``rank=None`` every singular value above ``rtol`` times the largest is kept (exact for a low-rank change)."""
    u, s, vh = torch.linalg.svd(delta.to(torch.float64), full_matrices=False)
    keep = rank if rank is not None else max(1, int((s > rtol * s[0]).sum())) if s[0] > 0 else 1
    keep = min(keep, s.numel())
    root = s[:keep].sqrt()
    return u[:, :keep] * root, root[:, None] * vh[:keep]


def pipeline_parameter(pipe, name: str) -> nn.Parameter:
    """The parameter ``<component>.<path>`` of a pipeline, e.g. ``unet.mid_block....to_k.weight``."""
    component, _, path = name.partition(".")
    module = getattr(pipe, component, None)
    if not isinstance(module, nn.Module):
        raise ErasureError(f"the pipeline has no component '{component}' for edited tensor {name}")
    try:
        return module.get_parameter(path)
    except AttributeError:
        raise ErasureError(
            f"the pipeline's {component} has no parameter {path}; this edit was made for a model of another topology"
        ) from None


@dataclass(frozen=True)
class Edit:
    """New values for some of a pipeline's parameters, and how they were made."""

    method: str
    concepts: tuple[str, ...]
    config: Mapping[str, Any]
    tensors: Mapping[str, Tensor]
    base_hashes: Mapping[str, str]
    originals: Mapping[str, Tensor] | None = field(default=None, repr=False, compare=False)
    info: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # the dtype the base model was loaded in, and each base tensor's hashes after rounding to fp16 / bf16
    # (erasure.precision.value_hashes): an edit made on one load applies to another dtype's load of the
    # same checkpoint, and only to that checkpoint
    base_dtype: str | None = None
    base_hashes_rounded: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    kind = "edit"  # the result protocol (erasure.results): what erase() returned

    def __eq__(self, other: object) -> bool:
        """Same method, concepts, config, base and values (tensors compared exactly, not elementwise)."""
        if not isinstance(other, Edit):
            return NotImplemented
        return (self.method == other.method and self.concepts == other.concepts
                and _config_key(self.config) == _config_key(other.config) and dict(self.base_hashes) == dict(other.base_hashes)
                and set(self.tensors) == set(other.tensors)
                and all(torch.equal(self.tensors[k].cpu(), other.tensors[k].cpu()) for k in self.tensors))

    __hash__ = None  # type: ignore[assignment]  # mutable-looking contents: compare, do not hash

    def __post_init__(self) -> None:
        object.__setattr__(self, "concepts", tuple(self.concepts))
        # stored as it is saved (JSON: tuples become lists), so a loaded result has the same config
        object.__setattr__(self, "config", _frozen(json.loads(json.dumps(dict(self.config), default=str))))
        object.__setattr__(self, "tensors", _frozen(self.tensors))
        object.__setattr__(self, "base_hashes", _frozen(self.base_hashes))
        object.__setattr__(self, "info", _frozen(self.info))
        object.__setattr__(self, "base_hashes_rounded", _frozen({k: _frozen(v) for k, v in
                                                                 self.base_hashes_rounded.items()}))
        if self.originals is not None:
            object.__setattr__(self, "originals", _frozen(self.originals))
        missing = set(self.tensors) - set(self.base_hashes)
        if missing:
            raise ValueError(f"edit has no base hash for {sorted(missing)[:3]}")
        # an edit with NaN or inf values is never made, loaded, applied or exported (a diverged erasure)
        bad = next((n for n, v in self.tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise ErasureError(f"the edit's {bad} holds non-finite values (NaN or inf): the erasure diverged; "
                               "make it again with a lower lr")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.tensors)

    # --- applying -------------------------------------------------------------------------

    def check_base(self, pipe) -> None:
        """Raise ErasureError unless every edited parameter of ``pipe`` still holds the original values
        (in the dtype ``pipe`` was loaded in: see :mod:`erasure.precision`)."""
        from erasure.precision import base_matches

        for name in self.tensors:
            param = pipeline_parameter(pipe, name)
            recorded = {"exact": self.base_hashes[name], **self.base_hashes_rounded.get(name, {})}
            match = base_matches(param, recorded, self.base_dtype)
            if match is None:
                raise ErasureError(
                    f"this edit was made on a {self.base_dtype} load and the pipeline is {param.dtype}; fp16 and bf16 "
                    "cannot be compared exactly: load the model in fp32 or in the edit's dtype")
            if not match:
                raise ErasureError(
                    f"{name} differs from the weights this edit was made from; apply it to the same base model "
                    "(or pass check=False to apply anyway)"
                )

    @torch.no_grad()
    def apply(self, pipe, *, check: bool = True):
        """Write the new values into ``pipe`` (in place, keeping each parameter's dtype/device); returns ``pipe``."""
        if check:
            self.check_base(pipe)
        bad = next((n for n, v in self.tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise ErasureError(f"the edit's {bad} holds non-finite values (NaN or inf); the erasure diverged: "
                               "make it again with a lower lr")
        for name, value in self.tensors.items():
            param = pipeline_parameter(pipe, name)
            if param.shape != value.shape:
                raise ErasureError(f"{name} has shape {tuple(param.shape)} but the edit has {tuple(value.shape)}")
            param.copy_(value.to(param.dtype))
        return pipe

    @torch.no_grad()
    def restore(self, pipe):
        """Put the original values back (needs ``originals``, which an edit made in this process has)."""
        if self.originals is None:
            raise ErasureError("this edit was loaded from a file without its originals; reload the base model instead")
        for name, value in self.originals.items():
            pipeline_parameter(pipe, name).copy_(value)
        return pipe

    # --- low rank ---------------------------------------------------------------------------

    def deltas(self, originals: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """new - original per tensor, in float64."""
        base = originals if originals is not None else self.originals
        if base is None:
            raise ErasureError("the low-rank form needs the original weights; pass originals= (e.g. from the base pipeline)")
        return {n: v.double() - base[n].to(v.device).double() for n, v in self.tensors.items()}

    def low_rank(
        self, rank: int | None = None, *, originals: Mapping[str, Tensor] | None = None, rtol: float = 1e-6
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """Each change as ``up @ down`` (``up``: out x r, ``down``: r x in), from an SVD in float64.

        ``rank=None`` keeps every singular value above ``rtol`` times the largest, which reproduces a
        closed-form edit exactly (its change has rank at most the number of embeddings it used).
        The rank used per tensor is that tensor's ``down.shape[0]``.
        """
        out = {}
        for name, delta in self.deltas(originals).items():
            up, down = svd_factors(delta, rank, rtol=rtol)
            out[name] = (up.float(), down.float())
        return out

    # --- files ------------------------------------------------------------------------------

    def metadata(self) -> dict[str, str]:
        from erasure.versions import package_versions

        return {
            "format": EDIT_FORMAT,
            "method": self.method,
            "concepts": json.dumps(list(self.concepts)),
            "config": json.dumps(dict(self.config), default=str),
            "base_hashes": json.dumps(dict(self.base_hashes)),
            "base_dtype": json.dumps(self.base_dtype),
            "base_hashes_rounded": json.dumps({k: dict(v) for k, v in self.base_hashes_rounded.items()}),
            "info": json.dumps(dict(self.info), default=str),
            "versions": json.dumps(package_versions()),
        }

    def save(self, path: str | Path, *, force: bool = False) -> Path:
        """A compact edit file: only the changed tensors, plus metadata and the tensors' checksum (safetensors;
        atomic, the user's umask, the output checks of :func:`erasure.files.check_output`)."""
        from erasure.files import write_safetensors

        return write_safetensors(path, self.tensors, self.metadata(), force=force)

    @classmethod
    def load(cls, path: str | Path) -> "Edit":
        from erasure.files import read_safetensors

        path = Path(path)
        tensors, meta = read_safetensors(path, "edit file")
        if meta.get("format") != EDIT_FORMAT:
            raise ErasureError(f"{path} is not an erasure edit file (format {meta.get('format')!r}, want {EDIT_FORMAT})")
        return cls(
            method=meta["method"],
            concepts=tuple(json.loads(meta["concepts"])),
            config=json.loads(meta["config"]),
            tensors=tensors,
            base_hashes=json.loads(meta["base_hashes"]),
            info=json.loads(meta.get("info", "{}")),
            base_dtype=json.loads(meta.get("base_dtype", "null")),
            base_hashes_rounded=json.loads(meta.get("base_hashes_rounded", "{}")),
        )


def make_edit(pipe, method: str, concepts, config: Mapping[str, Any], new_values: Mapping[str, Tensor],
              info: Mapping[str, Any] | None = None) -> Edit:
    """Build an :class:`Edit` from new values of pipeline parameters (originals read from ``pipe``; the new
    values are stored in each parameter's dtype)."""
    from erasure.precision import dtype_name, value_hashes

    originals, hashes, rounded, tensors = {}, {}, {}, {}
    dtypes = set()
    for name, value in new_values.items():
        param = pipeline_parameter(pipe, name)
        originals[name] = param.detach().clone()
        h = value_hashes(param)
        hashes[name] = h.pop("exact")
        rounded[name] = h
        dtypes.add(param.dtype)
        tensors[name] = value.detach().to(param.device, param.dtype).clone()
    return Edit(method=method, concepts=tuple(concepts), config=config, tensors=tensors, base_hashes=hashes,
                originals=originals, info=info or {},
                base_dtype=dtype_name(dtypes.pop()) if len(dtypes) == 1 else None, base_hashes_rounded=rounded)
