"""Shared helpers at the end of the chain, one concern a module: errors, devices, seeds,
processes, stop signals, images, run files, checkpoints, and what a run shows (utils.tracking). utils
imports nothing of the project (tests/test_utils_imports.py holds it to that).

`from utils import X` imports only X's module, on first use (PEP 562): a command that needs
no tensor, such as `data.prepare assemble`, starts without importing torch (1.5 s)."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "utils.checkpoints": ("CHECKPOINT_FORMAT", "READABLE_CHECKPOINT_FORMATS", "check_resumable",
                          "checkpoint_name", "load_checkpoint", "prune_checkpoints",
                          "resolve_checkpoint", "resume_checkpoint_path", "save_checkpoint",
                          "save_checkpoint_file"),
    "utils.config": ("Config",),
    "utils.devices": ("choose_device",),
    "utils.distributed": ("PROCESS_GROUP_TIMEOUT", "SINGLE_PROCESS", "Ranks", "process_device",
                          "process_group", "ranks_from_environment"),
    "utils.errors": ("OneLineParser", "UserError"),
    "utils.files": ("JsonLog", "partial_path", "prepare_output_dir", "remove_partial_files",
                    "sync_folder", "trim_log", "write_atomically", "write_durably", "write_json"),
    "utils.images": ("face_grid", "save_png", "to_uint8_images"),
    "utils.seeding": ("restore_rank_rng_states", "restore_rng_states", "rng_states",
                      "seed_everything"),
    "utils.signals": ("StoppedBySignal", "StopSignals"),
    "utils.tracking": ("LOG_TO", "SINKS", "SmoothedCurve", "TensorBoardSink", "VisdomSink",
                       "Visualizer", "WandbSink", "audio_players", "current_run_records",
                       "install_dashboard_assets", "live_sinks", "log_to_help",
                       "missing_dashboard_assets", "panels_for", "serve_dashboard", "svg_chart",
                       "visdom_static_dir", "window_id", "write_run_page"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
