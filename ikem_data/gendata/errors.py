"""The one error type of ``ikem-data gendata``, in a module of its own so that every
``gendata_*`` module (and the spawned parser workers) can raise it without importing the
others; :mod:`ikem_data.gendata.run` re-exports it."""


class GendataError(Exception):
    """A user-facing error of ``gendata`` (bad arguments or input); the message is one line."""
