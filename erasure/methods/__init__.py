"""Erasure methods, plugged in by name: ``erase(pipe, "uce", ["circle"])`` returns an :class:`~erasure.edit.Edit`.

Every method is a function ``(pipe, concepts, **settings) -> Edit`` registered in :data:`METHODS`; the
edit is not applied (call ``edit.apply(pipe)``), so one loaded model can be edited several ways.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

from erasure.edit import Edit
from erasure.methods import closed_form, esd
from erasure.registry import Registry

Method = Callable[..., Edit]
METHODS: Registry[Method] = Registry("method")

for _name, _preset in closed_form.PRESETS.items():
    METHODS.register(_name, partial(closed_form.closed_form_edit, method=_name, **_preset))
for _name, _preset in esd.PRESETS.items():
    METHODS.register(_name, partial(esd.esd_edit, method=_name, **_preset))


def erase(pipe, method: str, concepts: Sequence[str] | str, **settings) -> Edit:
    """Run erasure ``method`` on ``pipe`` for ``concepts``; returns the edit (``edit.apply(pipe)`` applies it)."""
    return METHODS.get(method)(pipe, concepts, **settings)


__all__ = ["METHODS", "Method", "erase"]
