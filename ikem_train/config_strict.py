"""Strict reading of run configs: a YAML loader and a type check (issue 22, classes 1 and 2).

Used by :mod:`ikem_train.config` for config files, ``--set`` values and the config a
checkpoint carries alike, so one value is judged the same wherever it comes from.

:class:`StrictLoader` is ``yaml.SafeLoader`` minus what a config never needs and a
careless or hostile file abuses: aliases and anchors (nested aliases expand into
gigabytes), tags, merge keys (``<<``) and duplicate keys (PyYAML keeps the last
in silence, so a second ``optim:`` block drops the first). Each refusal names the file
and line. It reads ``1e-4`` as a float, as YAML 1.2 does (YAML 1.1, PyYAML's, needs
``1.0e-4``), so that a strict float check does not refuse the common spelling.

:func:`type_problems` checks the values against the dataclass annotations before
pydantic converts them: a bool is not an int or a float (``batch_size: true`` trained
with batch 1), a string is not a number, ints fit in 64 bits (torch's seed), floats are
finite and within float32's range (the dtype they are used in). Every problem names the
key and quotes the value with :func:`ikem_data.quoting.quote`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing

import numpy as np
import yaml

from ikem_data.quoting import quote

INT64 = (-2 ** 63, 2 ** 63 - 1)
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # smallest normal: below it a value is 0 or denormal in float32


class RefusedYAML(yaml.YAMLError):
    """YAML that parses but that a config may not use; the message names file, line and why."""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing aliases, anchors, tags, merge keys and duplicate keys.

    Args:
        stream: the YAML text. name: what messages call it (a path, ``--set key=value``).
    """

    def __init__(self, stream, name="<config>"):
        super().__init__(stream)
        self.name = str(name)  # the reader's name: PyYAML's own syntax errors name the file too

    def _refuse(self, mark, why):
        return RefusedYAML(f"{self.name}, line {mark.line + 1}: {why}")

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise self._refuse(event.start_mark, f"YAML aliases (*{event.anchor[:40]}) are not allowed in a "
                                                 "config; write the value out")
        if getattr(event, "anchor", None) is not None:
            raise self._refuse(event.start_mark, f"YAML anchors (&{event.anchor[:40]}) are not allowed in a "
                                                 "config; write each value out")
        if getattr(event, "tag", None) is not None:
            raise self._refuse(event.start_mark, f"YAML tags ({event.tag[:60]}) are not allowed in a config; "
                                                 "write plain values")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise self._refuse(key_node.start_mark, "YAML merge keys (<<) are not allowed in a config")
                key = self.construct_object(key_node, deep=True)
                try:
                    line = first.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    break
                if line is not None:
                    raise self._refuse(key_node.start_mark, f"duplicate key {quote(key)} (first at line {line}); "
                                                            "each key may appear once")
                first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 floats without a dot or without an exponent sign (1e-4, 1E5, 2.5e3), which YAML 1.1 reads as strings
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str, name: str):
    """Parse ``text`` with :class:`StrictLoader` (``name`` for messages).

    Raises:
        RefusedYAML: aliases, anchors, tags, merge or duplicate keys (file and line named).
        yaml.YAMLError: a syntax error (PyYAML's message, naming ``name``).
    """
    loader = StrictLoader(text, name)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# -- types as declared ------------------------------------------------------------------


def _has_before_validator(cls, name) -> bool:
    """True when the pydantic dataclass ``cls`` checks field ``name`` itself before conversion
    (e.g. modality lists, which take aliases and comma strings): it then owns that field's types."""
    decorators = getattr(cls, "__pydantic_decorators__", None)
    for dec in getattr(decorators, "field_validators", {}).values():
        if name in dec.info.fields and dec.info.mode == "before":
            return True
    return False


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def shown(value) -> str:
    """``value`` as a message quotes it: YAML's spelling of bools and None, else :func:`quote`."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return quote(value)


def _scalar_problem(kind, value) -> str | None:
    """Why ``value`` is not a ``kind`` (int, float, bool, str), or None."""
    text = shown(value)
    if kind is bool:
        return None if isinstance(value, bool) else f"expected true or false, got {text} ({type(value).__name__})"
    if kind is str:
        return None if isinstance(value, str) else f"expected a string, got {text} ({type(value).__name__})"
    if kind is int:
        if not _is_int(value):
            return f"expected an integer, got {text} ({type(value).__name__})"
        if not INT64[0] <= value <= INT64[1]:
            return f"{text} does not fit in a 64-bit integer"
        return None
    if kind is float:
        if not (_is_int(value) or isinstance(value, float)):
            return f"expected a number, got {text} ({type(value).__name__})"
        if _is_int(value) and abs(value) > FLOAT32_MAX:
            return f"{text} is outside the float32 range (magnitude at most {FLOAT32_MAX:.4g})"
        number = float(value)
        if not math.isfinite(number):
            return f"{text} is not a finite number"
        if abs(number) > FLOAT32_MAX:
            return f"{text} is outside the float32 range (magnitude at most {FLOAT32_MAX:.4g})"
        if 0 < abs(number) < FLOAT32_TINY:
            return f"{text} is too close to 0 for float32 (magnitude at least {FLOAT32_TINY:.4g}, or 0)"
        return None
    return None


def _value_problems(hint, value, where) -> list[str]:
    """Problems of ``value`` against the annotation ``hint``, each naming ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return type_problems(value, hint, where) if isinstance(value, dict) else []  # pydantic names a non-dict
    if origin is typing.Union:
        if value is None and type(None) in args:
            return []
        options = [a for a in args if a is not type(None)]
        return _value_problems(options[0], value, where) if len(options) == 1 else []
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):  # 1 == True: the type must match too
            return []
        return [f"{where}: expected one of {', '.join(shown(a) for a in args)}, got {shown(value)}"]
    if origin is tuple:
        item = args[0] if args else None
        if isinstance(value, str) and item is str:
            return []  # a comma list the field's own validator splits
        if not isinstance(value, (list, tuple)):
            return [f"{where}: expected a list, got {shown(value)} ({type(value).__name__})"]
        out = []
        for i, element in enumerate(value):
            out += _value_problems(item, element, f"{where}[{i}]") if item is not None else []
        return out
    problem = _scalar_problem(hint, value) if hint in (bool, str, int, float) else None
    return [f"{where}: {problem}"] if problem else []


def type_problems(data: dict, cls, where: str = "") -> list[str]:
    """The values of ``data`` that are not of the types ``cls`` (a dataclass) declares.

    Unknown keys and non-mapping sections are left to pydantic (whose messages list the
    valid keys); fields with their own before-validator check themselves.

    Returns:
        one ``"<section.key>: why"`` line per bad value (empty: all fine).
    """
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        if field.name not in data or _has_before_validator(cls, field.name):
            continue
        out += _value_problems(hints[field.name], data[field.name], f"{where}.{field.name}" if where else field.name)
    return out
