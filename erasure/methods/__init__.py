"""Erasure methods, plugged in by name: ``erase(pipe, "uce", ["circle"])`` returns an :class:`~erasure.edit.Edit`
(dense new weights) or, for the adapter methods (``lora-esd``, ``spm``, ``mace``), an
:class:`~erasure.adapters.Adapter` (LoRA factors). Both have ``apply(pipe)``, ``restore(pipe)``,
``save(path, force=...)``.

Every method is a function ``(pipe, concepts, **settings) -> Edit | Adapter`` registered in :data:`METHODS`;
the result is not applied (call ``result.apply(pipe)``), so one loaded model can be edited several ways.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

from erasure.adapters import Adapter
from erasure.edit import Edit
from erasure.methods import adapters, closed_form, esd
from erasure.registry import Registry

Method = Callable[..., "Edit | Adapter"]
METHODS: Registry[Method] = Registry("method")

for _name, _preset in closed_form.PRESETS.items():
    METHODS.register(_name, partial(closed_form.closed_form_edit, method=_name, **_preset))
for _name, _preset in esd.PRESETS.items():
    METHODS.register(_name, partial(esd.esd_edit, method=_name, **_preset))
for _name, _fn in adapters.PRESETS.items():
    METHODS.register(_name, partial(_fn, method=_name))


def erase(pipe, method: str, concepts: Sequence[str] | str, **settings) -> Edit | Adapter:
    """Run erasure ``method`` on ``pipe`` for ``concepts``; returns the result (``result.apply(pipe)`` applies it)."""
    return METHODS.get(method)(pipe, concepts, **settings)


__all__ = ["METHODS", "Method", "erase"]
