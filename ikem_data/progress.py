"""Progress bars that also read well in a log file.

On a terminal, :func:`progress_bar` is a plain ``tqdm`` bar redrawn in place. When the
stream is not a terminal (a pipe, ``nohup``, a batch job's log), an in-place bar is a
flood of carriage returns; there it is one plain line (count, percentage, rate, elapsed
and remaining time) every :data:`LOG_INTERVAL_S` seconds instead.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

#: Seconds between two progress lines when the stream is not a terminal.
LOG_INTERVAL_S = 30.0
_LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f} %), {elapsed} elapsed, {remaining} left, {rate_fmt}{postfix}"


class _NoCarriageReturns:
    """A stream wrapper that drops tqdm's redraw characters: lone ``\\r`` and ``\\n``."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        text = text.replace("\r", "")
        if text and text != "\n":  # tqdm's own line end after the last display; ours is in the line
            self.stream.write(text)

    def flush(self):
        self.stream.flush()


class _LogLines(tqdm):
    """tqdm that writes each display as a new line, at most every ``mininterval`` seconds."""

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)  # shown with the next periodic line

    def display(self, msg=None, pos=None):
        text = self.__str__() if msg is None else msg
        if text:
            self.fp.write(text + "\n")
            self.fp.flush()
        return True


def progress_bar(iterable=None, *, file=None, disable=False, **kwargs):
    """A ``tqdm`` bar on a terminal, periodic plain lines elsewhere.

    Args:
        iterable, kwargs: as ``tqdm`` (``total``, ``initial``, ``desc``, ``unit``, ``leave`` ...).
        file: the stream (default ``sys.stderr``); whether it is a terminal decides the kind.
        disable: no output at all (``update`` and ``close`` still work).

    Returns:
        a ``tqdm`` instance (``update``, ``set_postfix``, ``close``; iterable when given one).
    """
    stream = sys.stderr if file is None else file
    isatty = getattr(stream, "isatty", None)
    if disable or (isatty is not None and isatty()):
        return tqdm(iterable, file=stream, disable=disable, **kwargs)
    kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    kwargs.setdefault("maxinterval", max(LOG_INTERVAL_S, kwargs["mininterval"]))
    return _LogLines(iterable, file=_NoCarriageReturns(stream), bar_format=_LINE_FORMAT, **kwargs)
