"""The live outputs --log_to offers: a tracker is one file (a class as protocol.Sink
describes) plus one line in SINKS."""
from __future__ import annotations

from pathlib import Path

from utils.tracking.protocol import Sink
from utils.tracking.tensorboard_sink import TensorBoardSink
from utils.tracking.visdom_sink import VisdomSink
from utils.tracking.wandb_sink import WandbSink

SINKS = {"visdom": VisdomSink, "tensorboard": TensorBoardSink, "wandb": WandbSink}
LOG_TO = tuple(SINKS)


def log_to_help() -> str:
    """--log_to's help: each sink's name and what it gives."""
    return "live outputs, comma-separated: " + "; ".join(
        f"{name}: {sink.summary}" for name, sink in SINKS.items())


def live_sinks(options, run_dir: Path, panels) -> list[Sink]:
    """The --log_to outputs that open; one that cannot says so in one line and is left out."""
    names = [name for name in options.log_to.split(",")
             if not (name == "visdom" and options.no_visdom)]
    sinks = []
    for name in names:
        try:
            sinks.append(SINKS[name](options, run_dir, panels))
        except ImportError:
            print(f"note: --log_to {name} needs the {SINKS[name].package} package (its "
                  f"pinned line is in requirements.txt); training goes on without it")
        except Exception as error:      # noqa: BLE001 - a tracker must never stop training
            print(f"note: --log_to {name} did not start ({str(error).splitlines()[0][:120]}); "
                  "training goes on without it")
    return sinks
