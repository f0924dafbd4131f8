"""Faster constructors and readers for the frozen, slotted result records.

The generated frozen ``__init__`` routes every field through ``object.__setattr__`` (~65 ns a
field). The constructor made here is a plain class with the same slots, whose ``__init__`` stores
each field with an ordinary attribute write (a few ns each) and then turns the new object into an
instance of the record's class by assigning ``__class__``. CPython allows that only between
classes whose instances have the same memory layout (same base, same slot names; slots are laid
out in sorted name order), and checks it on every assignment, so the result is a genuine record,
equal to the one the dataclass would build, in about a fifth of its time. This matters for
records built once per billed span (and for ``SpanView``, once per decoded span).
``attribute_reader`` reads many records' fields at once, for the rows the ledger stores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields, is_dataclass
from keyword import iskeyword
from typing import Any, TypeVar

T = TypeVar("T")


def slot_constructor(cls: type[T]) -> Callable[..., T]:
    """A callable with ``cls``'s signature that builds an equal ``cls``; ``cls`` itself when the
    fast path does not apply (not a slotted dataclass, a ``__post_init__``, other bases)."""
    slots = vars(cls).get("__slots__")
    if (
        not is_dataclass(cls)
        or slots is None
        or cls.__bases__ != (object,)
        or hasattr(cls, "__post_init__")
        or any(not f.init for f in fields(cls))
    ):
        return cls
    name = f"new_{cls.__name__}"
    namespace: dict[str, Any] = {"_cls": cls, "_MISSING": MISSING}
    params, body = [], []
    for i, f in enumerate(fields(cls)):
        if f.default_factory is not MISSING:
            namespace[f"_factory{i}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            body.append(f"        self.{f.name} = _factory{i}() if {f.name} is _MISSING else {f.name}")
            continue
        if f.default is MISSING:
            params.append(f.name)
        else:
            namespace[f"_default{i}"] = f.default
            params.append(f"{f.name}=_default{i}")
        body.append(f"        self.{f.name} = {f.name}")
    lines = [
        f"class {name}:",
        f"    __slots__ = {tuple(slots)!r}",
        f"    def __init__(self, {', '.join(params)}):",
        *body,
        "        self.__class__ = _cls",
    ]
    # source made of the dataclass's own field names only
    exec(compile("\n".join(lines), f"<slot constructor {cls.__qualname__}>", "exec"), namespace)
    make: Callable[..., T] = namespace[name]
    try:  # the layout check happens at the first build: fall back rather than fail later
        _check(cls, make)
    except TypeError:
        return cls
    return make


def _check(cls: type[Any], make: Callable[..., Any]) -> None:
    """Build one record through ``make`` and the dataclass and compare them, field by field."""
    args = {f.name: object() for f in fields(cls)}
    built, reference = make(**args), cls(**args)
    if type(built) is not cls or any(getattr(built, n) is not getattr(reference, n) for n in args):
        raise TypeError(f"slot constructor for {cls.__name__} does not build the same record")


def replacer(cls: type[T], *names: str) -> Callable[..., T]:
    """``lambda obj, *values: dataclasses.replace(obj, **dict(zip(names, values)))``, built with
    :func:`slot_constructor`'s constructor: the other fields are copied by attribute, in one call."""
    if not is_dataclass(cls) or any(not f.init for f in fields(cls)):
        raise TypeError(f"{cls.__name__} is not a dataclass of init fields")
    all_names = [f.name for f in fields(cls)]
    if any(n not in all_names for n in names):
        raise TypeError(f"{cls.__name__} has no fields {names}")
    make = slot_constructor(cls)
    args = ", ".join(n if n in names else f"obj.{n}" for n in all_names)
    namespace: dict[str, Any] = {"_make": make}
    source = f"def replace(obj, {', '.join(names)}):\n    return _make({args})\n"
    exec(compile(source, f"<replace {cls.__qualname__}>", "exec"), namespace)  # field names only
    replace: Callable[..., T] = namespace["replace"]
    return replace


def attribute_reader(*paths: str) -> Callable[[Iterable[Any]], list[tuple[Any, ...]]]:
    """``lambda items: [(item.a, item.b.c, ...) for item in items]`` for the dotted ``paths``
    ``("a", "b.c", ...)``: generated code that reads each attribute by name in a list display.

    The interpreter specializes an attribute read it executes repeatedly (for a slotted record,
    to a check of the type and a read at a fixed offset), which ``attrgetter`` cannot: it looks
    each name up through the type every time. For the ledger's rows this reads their fields
    about three times as fast, and an append reads some 30 fields of every row.
    """
    for path in paths:
        if not all(part.isidentifier() and not iskeyword(part) for part in path.split(".")):
            raise ValueError(f"not an attribute path: {path!r}")
    items = ", ".join(f"item.{path}" for path in paths)
    source = f"def read(items):\n    return [({items},) for item in items]\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, "<attribute reader>", "exec"), namespace)  # identifiers only
    read: Callable[[Iterable[Any]], list[tuple[Any, ...]]] = namespace["read"]
    return read
