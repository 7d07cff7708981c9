"""Frozen dataclasses that are quick to build. Pure.

A frozen dataclass's generated __init__ sets each field with object.__setattr__(self, "name",
value), looked up and called by name per field: about twice the cost of setting the slot through
its descriptor. The route step builds some nine of them per record (outputs, states, verdicts),
so `quick_init` gives the hot ones an __init__ that calls each slot's descriptor directly. The
class stays what @dataclass made it: frozen (assignment after construction raises), with the
same fields, defaults, equality, hash, repr and dataclasses.replace().
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted dataclass (plain fields: no default_factory, no __post_init__,
    no keyword-only or init=False fields) an __init__ that fills its slots directly."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__, which quick_init would skip")
    namespace: dict[str, Any] = {}
    signature, body = [], []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]  # checked above
        if (field.default_factory is not dataclasses.MISSING or not field.init
                or field.kw_only):
            raise TypeError(f"{cls.__name__}.{field.name}: only plain fields are supported")
        namespace[f"_set_{field.name}"] = cls.__dict__[field.name].__set__
        if field.default is dataclasses.MISSING:
            signature.append(field.name)
        else:
            namespace[f"_default_{field.name}"] = field.default
            signature.append(f"{field.name}=_default_{field.name}")
        body.append(f"    _set_{field.name}(self, {field.name})")
    source = f"def __init__(self, {', '.join(signature)}):\n" + "\n".join(body or ["    pass"])
    exec(source, namespace)  # as dataclasses builds its own __init__
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]  # the point of this function
    return cls
