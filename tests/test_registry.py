"""The generic registry: registration, lookup, "did you mean" on a typo."""

import pytest

from erasure.errors import ErasureError
from erasure.registry import Registry

pytestmark = pytest.mark.fast


def test_register_as_decorator_and_as_call():
    methods: Registry[object] = Registry("method")

    @methods.register("esd")
    class ESD:
        pass

    uce = methods.register("uce", "UCE")
    assert methods.get("esd") is ESD and uce == "UCE"
    assert methods.names() == ("esd", "uce")
    assert methods.items() == (("esd", ESD), ("uce", "UCE"))
    assert "esd" in methods and "xyz" not in methods and len(methods) == 2 and list(methods) == ["esd", "uce"]


def test_typo_suggests_the_closest_name():
    metrics: Registry[int] = Registry("metric")
    for i, name in enumerate(["clip-score", "fid", "nudenet-rate"]):
        metrics.register(name, i)
    with pytest.raises(ErasureError) as info:
        metrics.get("clip_scor")
    message = str(info.value)
    assert "unknown metric 'clip_scor'; did you mean 'clip-score'?" in message
    assert "known: clip-score, fid, nudenet-rate" in message and "\n" not in message
    with pytest.raises(ErasureError, match="did you mean 'fid'"):
        metrics.get("FID")  # case-insensitive suggestion, exact lookup


def test_no_suggestion_when_nothing_is_close_and_long_lists_are_summarised():
    sets: Registry[int] = Registry("prompt set")
    for i in range(20):
        sets.register(f"set-{i:02d}", i)
    message = str(pytest.raises(ErasureError, sets.get, "zzzz").value)
    assert "did you mean" not in message and "(8 more)" in message
    assert "no widget is registered" in str(pytest.raises(ErasureError, Registry("widget").get, "a").value)


def test_duplicate_names_are_refused_unless_replaced():
    r: Registry[int] = Registry("method")
    r.register("esd", 1)
    with pytest.raises(ErasureError, match="already registered; pick another name or pass replace=True"):
        r.register("esd", 2)
    r.register("esd", 3, replace=True)
    assert r.get("esd") == 3
    with pytest.raises(ErasureError, match="invalid"):
        r.register(" esd", 4)
