"""A missing drawing library becomes one line that says what to install."""

from contextlib import contextmanager

import click


@contextmanager
def needs_packages(command, packages, install):
    """Turn a ModuleNotFoundError of one of ``packages`` (top-level names) inside the block
    into ``command needs X: pip install <install>``; any other error passes through."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in packages:
            raise
        raise click.ClickException(f"{command} needs {exc.name}: pip install {install}") from None
