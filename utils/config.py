"""The run's options once resolved: read everywhere, changed nowhere."""
from __future__ import annotations

import argparse


class Config(argparse.Namespace):
    """Options as runtime.py resolved them, before anything was built. Setting or deleting
    an attribute raises, so what options.json and the checkpoint record is what every part
    of the run used; `replace` makes a changed copy."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"options are resolved once, in runtime.py; --{name} cannot "
                             "change after that (use Config.replace for a changed copy)")

    def __delattr__(self, name: str) -> None:
        self.__setattr__(name, None)

    def replace(self, **changes) -> "Config":
        unknown = set(changes) - set(vars(self))
        if unknown:
            raise AttributeError(f"no such options: {', '.join(sorted(unknown))}")
        return Config(**{**vars(self), **changes})
