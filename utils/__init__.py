"""Shared helpers at the end of the chain, one concern a module: errors, devices, seeds,
processes, stop signals, images, run files, checkpoints, and what a run shows (utils.tracking). utils
imports nothing of the project (tests/test_utils_imports.py holds it to that)."""
from utils.checkpoints import (CHECKPOINT_FORMAT, READABLE_CHECKPOINT_FORMATS, check_resumable,
                               checkpoint_name, load_checkpoint, prune_checkpoints,
                               resolve_checkpoint, resume_checkpoint_path, save_checkpoint,
                               save_checkpoint_file)
from utils.config import Config
from utils.devices import choose_device
from utils.distributed import (PROCESS_GROUP_TIMEOUT, SINGLE_PROCESS, Ranks, process_device,
                               process_group, ranks_from_environment)
from utils.errors import OneLineParser, UserError
from utils.files import (JsonLog, partial_path, prepare_output_dir, remove_partial_files,
                         sync_folder, trim_log, write_atomically, write_durably, write_json)
from utils.images import face_grid, save_png, to_uint8_images
from utils.seeding import restore_rng_states, rng_states, seed_everything
from utils.signals import StoppedBySignal, StopSignals
from utils.tracking import (LOG_TO, SINKS, SmoothedCurve, TensorBoardSink, VisdomSink,
                            Visualizer, WandbSink, audio_players, current_run_records,
                            install_dashboard_assets, live_sinks, log_to_help, missing_dashboard_assets,
                            panels_for, serve_dashboard, svg_chart, visdom_static_dir,
                            window_id, write_run_page)
