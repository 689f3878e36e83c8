"""Quote a bad value in an error message without printing (or even building) all of it.

A message that names the value it refuses is good; one that takes ``repr`` of it is not
when the value is huge or deeply nested: ``repr`` of a YAML value built from nested
aliases expands it in full (gigabytes), and ``repr`` of a pickle's list nested 100 000
deep raises ``RecursionError``. :func:`quote` bounds both the work and the text: nesting
depth, items per container and string length are capped by :class:`reprlib.Repr` (which
never visits what it leaves out), and the result is cut at ``limit`` characters.

Example::

    quote([[[[1]]]] * 1000)         # '[[[[...]], [[...]], [[...]], [[...]], ...]]'
    quote("x" * 10_000, limit=20)   # "'xxxxxxx...xxxxxxx'" (20 characters)
"""

from __future__ import annotations

import reprlib

#: Default most characters a quoted value takes in a message.
QUOTE_LIMIT = 80

_REPR = reprlib.Repr()
_REPR.maxlevel = 3  # deeper levels print as [...]: the work stays bounded on any nesting
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 4
_REPR.maxarray = 4
_REPR.maxstring = _REPR.maxother = QUOTE_LIMIT
_REPR.maxlong = 40


def quote(value, limit: int = QUOTE_LIMIT) -> str:
    """A ``repr``-like text of ``value`` of at most ``limit`` characters (``limit`` >= 5).

    Containers show their first items and nesting its first levels (``[1, 2, 3, 4, ...]``,
    ``[[[...]]]``); a longer text keeps its start and end around ``...``. Safe on any
    value: an object whose ``__repr__`` fails is shown by its type name.
    """
    try:
        text = _REPR.repr(value)
    except Exception:  # a foreign object's __repr__ that raises (or recurses) must not hide the real error
        text = f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    head = (limit - 3) // 2 + (limit - 3) % 2
    return text[:head] + "..." + text[len(text) - (limit - 3 - head):]
