"""A click group whose subcommands are imported only when used.

`ikem-data --help` then stays fast (no numba or torch import), and a broken
optional dependency only affects the command that needs it.
"""

import importlib

import click


class LazyGroup(click.Group):
    """Group built from ``{command name: "module:attribute"}``."""

    def __init__(self, *args, lazy_commands=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx, name):
        if name in self.lazy_commands:
            module_name, attribute = self.lazy_commands[name].split(":")
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, name)
