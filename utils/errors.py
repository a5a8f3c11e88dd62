"""The one kind of error a user can cause and fix, and the parser that raises it."""
from __future__ import annotations

import argparse


class UserError(Exception):
    """Something the user can fix (a path, an option, a file); printed as one line, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose own errors (an unknown option, a value outside its choices, a number
    that is not one) are UserErrors like every other bad option: one line, exit 2, no usage
    dump. Subcommand parsers inherit it."""

    def error(self, message):
        raise UserError(f"{message} (see `{self.prog} --help`)")
