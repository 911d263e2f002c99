"""Typed, validated configuration records: one rule for building, overriding and serialising them.

Every configuration in protoseg (segmentation presets, matcher options, build presets, protocol
settings) is a frozen dataclass. :func:`checked` validates each field against its annotation when a
record is made, so a wrong value fails where the user wrote it, with one :class:`ProtosegError` that
names the field and the values it takes — never later, inside the first image.

- ``Literal[...]`` fields take one of the listed values;
- ``bool`` takes ``True``/``False`` only; ``int`` a whole number; ``float`` any real number (stored as
  ``float``); ``X | None`` also ``None``;
- nested records (e.g. :class:`~protoseg.config.superpixels.SuperpixelParams`) take an instance or a dict;
- tuples take any sequence of the right length.

:func:`override` is the single merge rule: the given fields replace the record's (``None`` included: it
is a value, e.g. "no SAM"); unknown names are an error listing the known ones. Command lines drop the
options a user did not give (:func:`given`) before overriding. :func:`to_dict` / :func:`from_dict` make a
record JSON-ready and back.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from protoseg.errors import ProtosegError

R = TypeVar("R")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


#: scalar annotation -> the Python types it accepts (``bool`` is never taken for a number).
_SCALARS: dict[type, tuple[type, ...]] = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}


def _convert(value: Any, tp: Any) -> Any:
    """``value`` as annotation ``tp`` requires, or :class:`_Mismatch`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp) and type(value) in {type(a) for a in get_args(tp)}:
            return value
        raise _Mismatch
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _convert(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if tp in _SCALARS:
        if isinstance(value, _SCALARS[tp]) and (tp is bool or not isinstance(value, bool)):
            return tp(value)
        raise _Mismatch
    if origin is tuple:
        args = get_args(tp)
        if isinstance(value, list | tuple) and len(value) == len(args):
            return tuple(_convert(v, a) for v, a in zip(value, args, strict=True))
        raise _Mismatch
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise _Mismatch
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return from_dict(tp, value)
        raise _Mismatch
    return value


def checked(record: Any, what: str) -> None:
    """Validate (and normalise, e.g. ``int`` -> ``float``) every field of a frozen dataclass in place.

    Call from ``__post_init__``. ``what`` names the record in messages (e.g. ``"freeda option"``).
    """
    for f in dataclasses.fields(record):
        if not f.init:
            continue
        tp = _hints(type(record))[f.name]
        value = getattr(record, f.name)
        try:
            converted = _convert(value, tp)
        except _Mismatch:
            raise ProtosegError(f"{what} {f.name!r} must be {_describe(tp)}; got {value!r}") from None
        except ProtosegError as exc:
            raise ProtosegError(f"{what} {f.name!r}: {exc}") from None
        if converted is not value:
            object.__setattr__(record, f.name, converted)


def require(condition: bool, what: str, name: str, rule: str, value: Any) -> None:
    """Raise ``ProtosegError("<what> '<name>' must be <rule>; got <value>")`` unless ``condition``."""
    if not condition:
        raise ProtosegError(f"{what} {name!r} must be {rule}; got {value!r}")


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _check_names(cls: type, names: typing.Iterable[str], what: str) -> None:
    unknown = sorted(set(names) - set(field_names(cls)))
    if unknown:
        raise ProtosegError(f"unknown {what} {', '.join(map(repr, unknown))}; known: "
                            f"{', '.join(field_names(cls))}")


def override(record: R, what: str, **changes: Any) -> R:
    """A copy of ``record`` with ``changes`` applied, validated."""
    _check_names(type(record), changes, what)
    return dataclasses.replace(record, **changes) if changes else record


def given(**options: Any) -> dict[str, Any]:
    """The options whose value is not ``None`` (command-line options the user passed)."""
    return {k: v for k, v in options.items() if v is not None}


def to_dict(record: Any) -> dict[str, Any]:
    """JSON-ready data of a record (nested records become dicts, tuples lists)."""
    return {f.name: _plain(getattr(record, f.name)) for f in dataclasses.fields(record) if f.init}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def from_dict(cls: type[R], data: dict[str, Any], what: str | None = None) -> R:
    """The record of type ``cls`` described by ``data`` (as :func:`to_dict` writes it), validated."""
    if not isinstance(data, dict):
        raise ProtosegError(f"{what or cls.__name__} must be a mapping; got {data!r}")
    _check_names(cls, data, what or f"{cls.__name__} field")
    return cls(**data)
