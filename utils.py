"""Shared helpers at the end of the chain: errors, devices, seeds, images, checkpoints, logs."""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (a path, an option, a file); printed as one line, exit 2."""
