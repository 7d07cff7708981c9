"""quick_init: the same frozen dataclass, built through its slots' descriptors."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from processors.core.enrich import Recipient
from processors.core.frozen import quick_init
from processors.core.judge import Verdict
from processors.core.policy.engine import Decision, Enrichment
from processors.core.policy.rules import Facts
from processors.core.policy.state import RecipientState
from processors.runtime.engine.records import Output, Record

QUICK = [Record, Output, RecipientState, Verdict, Enrichment, Decision, Facts, Recipient]


@dataclasses.dataclass(frozen=True, slots=True)
class Reference:
    a: int
    b: str = "b"
    c: tuple[int, ...] = ()


@quick_init
@dataclasses.dataclass(frozen=True, slots=True)
class Quick:
    a: int
    b: str = "b"
    c: tuple[int, ...] = ()


@pytest.mark.parametrize("args,kwargs", [((1,), {}), ((1, "x"), {}), ((1,), {"c": (2,)}),
                                         ((), {"a": 1, "b": "y", "c": (3, 4)})])
def test_builds_what_the_dataclass_init_builds(args: tuple[Any, ...],
                                               kwargs: dict[str, Any]) -> None:
    quick, reference = Quick(*args, **kwargs), Reference(*args, **kwargs)
    assert dataclasses.astuple(quick) == dataclasses.astuple(reference)
    assert hash(quick) == hash(Quick(*args, **kwargs))
    assert quick == Quick(*args, **kwargs)
    assert repr(quick).removeprefix("Quick") == repr(reference).removeprefix("Reference")


def test_stays_frozen_and_replaceable() -> None:
    quick = Quick(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.a = 2  # type: ignore[misc]  # mypy refuses it too
    assert dataclasses.replace(quick, b="z") == Quick(1, "z")


@pytest.mark.parametrize(("args", "kwargs"), [((), {}), ((1, "b", (), 4), {}),
                                           ((1,), {"d": 2}), ((1,), {"a": 2})])
def test_same_signature_errors_as_the_dataclass(args: tuple[Any, ...],
                                                kwargs: dict[str, Any]) -> None:
    # The same TypeError the dataclass's own __init__ raises, word for word (any TypeError
    # would do for a bare pytest.raises, e.g. one from inside a broken generated __init__).
    with pytest.raises(TypeError) as expected:
        Reference(*args, **kwargs)
    with pytest.raises(TypeError) as raised:
        Quick(*args, **kwargs)
    assert str(raised.value).replace("Quick", "Reference") == str(expected.value)


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_hot_classes_keep_their_dataclass_signature(cls: type) -> None:
    """The classes the route step builds per record: quick, same parameters and defaults."""
    names = [f.name for f in dataclasses.fields(cls)]
    init = vars(cls)["__init__"]
    parameters = list(inspect.signature(init).parameters.values())[1:]
    assert [p.name for p in parameters] == names
    for field, parameter in zip(dataclasses.fields(cls), parameters, strict=True):
        expected = inspect.Parameter.empty if field.default is dataclasses.MISSING \
            else field.default
        assert parameter.default == expected, field.name
    assert init.__module__ == cls.__module__  # ours, not dataclasses'
    assert init.__code__.co_names[0].startswith("_set_")


def test_refuses_what_it_cannot_do_alike() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    for cls, why in ((NoSlots, "NoSlots is not a frozen, slotted dataclass"),
                     (NotFrozen, "NotFrozen is not a frozen, slotted dataclass"),
                     (Factory, "Factory.a: only plain fields are supported")):
        with pytest.raises(TypeError, match=why):
            quick_init(cls)
