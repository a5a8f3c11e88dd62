"""Entry point: parse options, check them, and dispatch to training or inference.

    python runtime.py                                   # train on the embedded demo set
    python runtime.py --dataset pairs.h5 --epochs 50    # train on your own pair file
    python runtime.py --inference --pre_trained_gen checkpoints/run/latest.pt --audio me.wav
    python runtime.py --evaluate --pre_trained_gen checkpoints/run/latest.pt --split test
    python runtime.py --save_path run --resume latest      # continue a stopped run exactly
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import fields
from pathlib import Path

import torch

import trainer
from data.audio import SAMPLE_RATE
from data.schema import validate_pair_file
from models import IMAGE_SIZES, ModelArgs, inference
from models.augment import augmentation_names
from models.compiled import COMPILE_MODES
from models.loss_terms import add_loss_term_options, loss_term_defaults_before, loss_term_flags
from models.losses import ADVERSARIAL_LOSSES
from models.precision import PRECISIONS, choose_precision, hardware_of
from models.recipes import RECIPES, apply_recipe
from models.variant_options import add_variant_options, check_variant_options, resolve_variants
from utils import (LOG_TO, SINGLE_PROCESS, Config, OneLineParser, Ranks, UserError, check_resumable,
                   choose_device, load_checkpoint, process_group, ranks_from_environment,
                   log_to_help, resume_checkpoint_path)

IMAGE_SIZES_TEXT = " or ".join(map(str, IMAGE_SIZES))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        description="Train a speech-conditioned face GAN (wav2pix) or render faces from speech.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    wav2pix = parser.add_argument_group("wav2pix options (same names and defaults)")
    wav2pix.add_argument("--lr_D", type=float, default=0.0004, help="discriminator learning rate")
    wav2pix.add_argument("--lr_G", type=float, default=0.0001,
                         help="learning rate of generator, speech encoder and speaker classifier")
    wav2pix.add_argument("--vis_screen", default="gan", help="visdom environment name")
    wav2pix.add_argument("--save_path", default="run",
                         help="run name: checkpoints/<save_path>/ and results/<save_path>/")
    add_loss_term_options(wav2pix, "wav2pix")
    wav2pix.add_argument("--pre_trained_disc", default=None,
                         help="checkpoint (or run folder) to start the discriminator from")
    wav2pix.add_argument("--pre_trained_gen", default=None,
                         help="checkpoint (or run folder) to start encoder and generator from; "
                              "with --inference, the model to render with")
    wav2pix.add_argument("--batch_size", type=int, default=64)
    wav2pix.add_argument("--num_workers", type=int, default=8,
                         help="DataLoader workers (clipped to the number of cores)")
    wav2pix.add_argument("--epochs", type=int, default=200)
    wav2pix.add_argument("--image_size", type=int, default=64, help=IMAGE_SIZES_TEXT)
    wav2pix.add_argument("--inference", action="store_true",
                         help="render faces instead of training")
    ours = parser.add_argument_group("further options")
    ours.add_argument("--dataset", default=None,
                      help="HDF5 pair file (see data/schema.py); default: the embedded demo set")
    ours.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ours.add_argument("--seed", type=int, default=0)
    ours.add_argument("--recipe", default="auto", choices=("auto", *RECIPES),
                      help="option values for a kind of data (docs/training.md#recipes); "
                           "auto: video for pair files made from videos, else plain (the "
                           "listed defaults); options given on the command line win")
    ours.add_argument("--audio_seconds", type=float, default=1.0,
                      help="speech the encoder reads per face, 0.3 to 4 s")
    ours.add_argument("--noise_dim", type=int, default=0,
                      help="noise vector size fed to G beside the speech (0: none, as wav2pix)")
    ours.add_argument("--lr_E", type=float, default=None,
                      help="learning rate of the speech encoder alone (0 freezes it); "
                           "default: --lr_G's")
    ours.add_argument("--balance", default="none", choices=("none", "speakers"),
                      help="speakers: every speaker takes an equal share of each epoch's "
                           "pairs, however many pairs it has; none: each pair once an epoch")
    add_loss_term_options(ours, "further")
    ours.add_argument("--checkpoint_every", type=int, default=10, help="epochs between checkpoints")
    ours.add_argument("--max_steps", type=int, default=0,
                      help="stop after this many training steps (0: no limit); for smoke tests")
    ours.add_argument("--audio", nargs="+", default=None, metavar="PATH",
                      help="with --inference: your own wav files or folders, one face per window")
    # ---- surviving runs: checkpoints on a schedule, stop signals, non-finite losses
    ours.add_argument("--resume", default=None, metavar="latest|PATH",
                      help="continue a run exactly: 'latest' in checkpoints/<save_path>, or a "
                           "checkpoint or run folder; its options apply unless given again")
    ours.add_argument("--checkpoint_every_steps", type=int, default=0,
                      help="also checkpoint every N steps (0: only every --checkpoint_every "
                           "epochs)")
    ours.add_argument("--keep_checkpoints", type=int, default=0,
                      help="keep only the newest K checkpoints (0: keep all)")
    ours.add_argument("--max_nonfinite_steps", type=int, default=10,
                      help="stop after this many steps in a row with a NaN/inf loss (each is "
                           "skipped, not applied)")
    add_dashboard_options(parser)
    add_evaluation_options(parser)
    add_variant_options(parser)
    add_scaling_options(parser)
    return parser


def add_dashboard_options(parser: argparse.ArgumentParser) -> None:
    dashboard = parser.add_argument_group("dashboard (visdom; --vis_screen names the environment)")
    dashboard.add_argument("--visdom_server", default="http://localhost",
                           help="visdom server that training plots to")
    dashboard.add_argument("--visdom_port", type=int, default=8097,
                           help="its port, and the port --serve_dashboard listens on")
    dashboard.add_argument("--no_visdom", action="store_true",
                           help="plot nothing to visdom (the run folder still gets every figure)")
    dashboard.add_argument("--log_to", default="visdom", metavar=",".join(LOG_TO),
                           help=log_to_help())
    dashboard.add_argument("--serve_dashboard", action="store_true",
                           help="start a visdom server on this machine at --visdom_port, after "
                                "installing its JavaScript from npm if missing")


def check_dashboard_options(options) -> None:
    if not 1 <= options.visdom_port <= 65535:
        raise UserError(f"--visdom_port must be between 1 and 65535, got {options.visdom_port}")
    if not options.visdom_server.startswith(("http://", "https://")):
        raise UserError(f"--visdom_server must start with http:// or https://, "
                        f"got {options.visdom_server!r}")
    chosen = options.log_to.split(",")
    if not all(name in LOG_TO for name in chosen) or len(set(chosen)) != len(chosen):
        raise UserError(f"--log_to takes one or more of {','.join(LOG_TO)}, comma-separated "
                        f"and each once, got {options.log_to!r}")


def add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    """--evaluate and the metrics during training."""
    from models.metrics import METRICS
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--evaluate", action="store_true",
                            help="score the faces of --pre_trained_gen (or the run's latest.pt) "
                                 "for --split; prints a table, writes metrics.json beside it")
    evaluation.add_argument("--split", default="test", choices=("train", "valid", "test"),
                            help="with --evaluate: the split to score")
    evaluation.add_argument("--metrics", default="all",
                            help=f"comma-separated: {', '.join(METRICS)}; or all")
    evaluation.add_argument("--inception", default=None, metavar="PATH",
                            help="a TorchScript Inception-v3 file (inception-2015-12-05.pt) "
                                 "for true FID; nothing is downloaded")
    evaluation.add_argument("--eval_every", type=int, default=0, metavar="N",
                            help="during training, run the metrics on the held-out split every "
                                 "N epochs and keep best.pt by identity accuracy (0: never)")
    evaluation.add_argument("--eval_samples", type=int, default=None, metavar="N",
                            help="pairs scored: 256 by default during training, every pair of "
                                 "the split with --evaluate")


def check_evaluation_options(options) -> None:
    from models.metrics import parse_metric_names
    parse_metric_names(options.metrics)
    if options.evaluate and options.inference:
        raise UserError("--evaluate and --inference are separate modes; pass one of them")
    if options.eval_every < 0:
        raise UserError(f"--eval_every must not be negative, got {options.eval_every}")
    if options.eval_samples is not None and options.eval_samples < 2:
        raise UserError(f"--eval_samples must be at least 2, got {options.eval_samples}")
    if options.inception and not Path(options.inception).is_file():
        raise UserError(f"--inception {options.inception}: no such file; pass a TorchScript "
                        "Inception-v3 file such as inception-2015-12-05.pt")


# ---------------------------------------------------------------- scaling up: torchrun, --batchnorm

def add_scaling_options(parser: argparse.ArgumentParser) -> None:
    scaling = parser.add_argument_group(
        "scaling up: several GPUs and machines (start with torchrun; --batch_size is per "
        "process), averaged generator, mixed precision")
    scaling.add_argument("--batchnorm", default="local", choices=("local", "sync", "frozen"),
                         help="local: each process normalises with its own batch; sync: "
                              "SyncBatchNorm over all processes (CUDA only); frozen: use the "
                              "stored running statistics (fine-tuning with small batches)")
    scaling.add_argument("--ema", dest="ema", action="store_true",
                         help="keep an exponential moving average of the generator side; "
                              "checkpoints save it, grids, evaluation and inference use it")
    scaling.add_argument("--no_ema", dest="ema", action="store_false",
                         help="no average (where --recipe video would keep one)")
    scaling.add_argument("--ema_decay", type=float, default=0.999,
                         help="weight of the old average at each generator step")
    scaling.add_argument("--precision", default="auto", choices=PRECISIONS,
                         help="autocast dtype of forward passes (fp16 adds loss scaling); auto: "
                              "bf16 where the CPU or GPU computes it natively, else fp32")
    scaling.add_argument("--compile", nargs="?", const="auto", default="off",
                         choices=COMPILE_MODES, metavar="MODE",
                         help="torch.compile the generator side and D; --compile alone: "
                              "reduce-overhead (CUDA graphs) on CUDA, default on CPU; "
                              "aot_eager traces without generating code")
    scaling.add_argument("--cuda_graph", action="store_true",
                         help="CUDA: record the whole training step (both halves, Adam, the "
                              "losses) once as a CUDA graph and replay it")
    scaling.add_argument("--cudnn_benchmark", action="store_true",
                         help="CUDA: let cuDNN time each layer's algorithms once and keep the "
                              "fastest (27-31%% faster eager steps on an H200); a resumed run "
                              "may then end rounding steps away from an uninterrupted one")
    scaling.add_argument("--data_on_device", default="auto",
                         choices=("auto", "on", "off", "shard"),
                         help="hold the train split on the device and crop, resize and draw "
                              "wrong faces there; shard: under torchrun each process holds "
                              "its own stripe of the rows (another order: see "
                              "docs/distributed.md); auto: on CUDA when the split fits in a "
                              "quarter of the free memory, else its stripe where that fits")
    scaling.add_argument("--read_blocks", type=int, default=0, metavar="ROWS",
                         help="read the train split ROWS consecutive pairs at a time: a batch "
                              "is batch_size / ROWS runs of the file, one HDF5 read each "
                              "instead of one per pair (for a file larger than memory; wrong "
                              "faces then come from the batch); 0: a shuffle of single pairs")


def check_scaling_options(options) -> None:
    if options.read_blocks < 0:
        raise UserError(f"--read_blocks must be 0 (off) or a number of rows such as 8, "
                        f"got {options.read_blocks}")
    if not 0 < options.ema_decay < 1:
        raise UserError(f"--ema_decay must be between 0 and 1 (such as 0.999), "
                        f"got {options.ema_decay}")
    penalty = penalty_of(options)
    if options.precision == "fp16" and penalty:
        raise UserError(f"--precision fp16 does not scale {penalty}'s gradient penalty, "
                        "whose input gradients would underflow; use --precision bf16 or fp32")
    if options.compile != "off" and penalty:
        raise UserError(f"--compile cannot train {penalty}: its gradient penalty needs a "
                        "double backward, which torch.compile does not support; drop --compile")


def penalty_of(options) -> str | None:
    """What puts a gradient penalty (a double backward) into D's loss: the loss, or R1."""
    if ADVERSARIAL_LOSSES[options.loss].gradient_penalty:
        return options.loss
    return "--r1_coef" if options.r1_coef else None


def check_cuda_graph(options, device, ranks) -> None:
    """--cuda_graph records one step of one process whose every choice is made on the GPU."""
    refusals = {"a GPU (this run is on the CPU)": device.type != "cuda",
                "one process (this is a torchrun run)": ranks.distributed,
                f"no --loss {options.loss}": ADVERSARIAL_LOSSES[options.loss].gradient_penalty,
                "no --r1_coef (a double backward)": bool(options.r1_coef),
                "--d_iters 1": options.d_iters != 1,
                "no --precision fp16 (its loss scaler decides on the host)":
                    options.precision == "fp16",
                "no --compile": options.compile != "off",
                "--batchnorm local or frozen": options.batchnorm == "sync",
                "no --augment or --speech_augment (their draws are untested inside a "
                "recording)": bool(augmentation_names(options.augment)
                                   + augmentation_names(options.speech_augment))}
    for needed, refused in refusals.items():
        if refused:
            raise UserError(f"--cuda_graph needs {needed}; drop --cuda_graph or change that")


def check_processes_and_device(options, device, ranks) -> None:
    """Options that depend on the device and on how the processes were started."""
    if ranks.distributed and (options.inference or options.evaluate):
        raise UserError("--inference and --evaluate run in one process; start them with "
                        "python, not torchrun")
    if options.cuda_graph:
        check_cuda_graph(options, device, ranks)
    if options.batchnorm == "sync" and device.type != "cuda":
        raise UserError("--batchnorm sync needs CUDA (PyTorch's SyncBatchNorm does not run on "
                        "CPU); use --batchnorm local or frozen")


def check_options(options) -> None:
    """Reject values no run can use, each with a one-line reason."""
    positive = {"--lr_D": options.lr_D, "--lr_G": options.lr_G, "--batch_size": options.batch_size,
                "--epochs": options.epochs, "--checkpoint_every": options.checkpoint_every}
    for name, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{name} must be a positive number, got {value}")
    if options.lr_E is not None and not (math.isfinite(options.lr_E) and options.lr_E >= 0):
        raise UserError(f"--lr_E must be zero or positive, got {options.lr_E}")
    for name in loss_term_flags():
        value = getattr(options, name)
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"--{name} must be zero or positive, got {value}")
    if options.image_size not in IMAGE_SIZES:
        raise UserError(f"--image_size must be {IMAGE_SIZES_TEXT}, got {options.image_size}")
    if not 0.3 <= options.audio_seconds <= 4.0:
        raise UserError(f"--audio_seconds must be between 0.3 and 4, got {options.audio_seconds}")
    for name in ("num_workers", "noise_dim", "max_steps", "seed"):
        if getattr(options, name) < 0:
            raise UserError(f"--{name} must not be negative, got {getattr(options, name)}")
    if options.audio and not options.inference:
        raise UserError("--audio renders faces and needs --inference")
    save_path = Path(options.save_path)
    if not options.save_path or save_path.is_absolute() or ".." in save_path.parts:
        raise UserError("--save_path must be a plain relative name such as 'my_run'")
    check_survival_options(options)
    check_dashboard_options(options)
    check_evaluation_options(options)
    check_variant_options(options)
    check_scaling_options(options)


def check_survival_options(options) -> None:
    for name in ("checkpoint_every_steps", "keep_checkpoints"):
        if getattr(options, name) < 0:
            raise UserError(f"--{name} must not be negative, got {getattr(options, name)}")
    if options.max_nonfinite_steps < 1:
        raise UserError(f"--max_nonfinite_steps must be at least 1, got "
                        f"{options.max_nonfinite_steps}")
    if options.resume and options.inference:
        raise UserError("--resume continues training; to render faces use --inference "
                        "--pre_trained_gen with the checkpoint")
    if options.resume and (options.pre_trained_gen or options.pre_trained_disc):
        raise UserError("--resume restores every network itself; drop --pre_trained_gen and "
                        "--pre_trained_disc")


def given_options(parser: argparse.ArgumentParser, argv) -> set[str]:
    """The options this command line sets: argparse fills in a default only where the
    namespace has no value yet, so every name starts out as a marker."""
    unset = object()
    names = vars(parser.parse_args([]))
    given = parser.parse_args(argv, argparse.Namespace(**{name: unset for name in names}))
    return {name for name, value in vars(given).items() if value is not unset}


NOT_RESUMED = ("resume", "inference", "pre_trained_gen", "pre_trained_disc", "audio")
# Options a checkpoint written before they existed ran with: their default at that time. The
# networks' (--generator, --speech_encoder, ...) are ModelArgs' defaults, which are what such a
# checkpoint was built with; its fields that are no option are never read.
BEFORE_THEY_EXISTED = {"precision": "fp32", "wrong_faces": "loader", "recipe": "plain",
                       **{entry.name: entry.default for entry in fields(ModelArgs)},
                       **loss_term_defaults_before()}


def merge_resumed_options(options, saved: dict, given: set[str]):
    """The checkpoint's options, except those given on this command line (which win, with a
    note where they change what the checkpoint's run did)."""
    for name, value in {**BEFORE_THEY_EXISTED, **saved}.items():
        if name in NOT_RESUMED or not hasattr(options, name):
            continue
        if name not in given:
            setattr(options, name, value)
        elif getattr(options, name) != value:
            print(f"note: resuming with --{name} {getattr(options, name)} "
                  f"(the checkpoint's run used {value})")
    return options


def resumed(parser: argparse.ArgumentParser, argv, options):
    """--resume: the checkpoint to continue, and the options (its own, unless given again)."""
    path = resume_checkpoint_path(options.resume, Path("checkpoints") / options.save_path)
    checkpoint = load_checkpoint(path)
    check_resumable(checkpoint, path)
    options.resume = str(path)
    options = merge_resumed_options(options, checkpoint["options"], given_options(parser, argv))
    check_options(options)
    return checkpoint, options


def dataset_path(options) -> Path:
    if options.dataset:
        return Path(options.dataset)
    from data.demo import demo_dataset_path
    return demo_dataset_path()


# ---------------------------------------------------------------- resolved once

def resolve(options, device: torch.device, ranks: Ranks = SINGLE_PROCESS) -> Config:
    """Every option decided before anything is built: the defaults that depend on other
    options, and for training the workers, --finetune's architecture and --precision auto.
    The result is frozen; options.json and checkpoints record it as it is used."""
    resolve_variants(options)
    if not (options.inference or options.evaluate):
        options.num_workers = clip_workers(options.num_workers)
        resolve_finetune(options)
        options.precision, line = choose_precision(options.precision, hardware_of(device))
        if ranks.is_main:
            print(line)
    return Config(**vars(options))


def config_for(argv, device: torch.device = torch.device("cpu"),
               ranks: Ranks = SINGLE_PROCESS) -> Config:
    """The options a command line gives a run started in this process (tests, benchmarks)."""
    parser = build_parser()
    options = parser.parse_args(argv)
    check_options(options)
    choose_recipe(options, given_options(parser, argv), ranks)
    return resolve(options, device, ranks)


def choose_recipe(options, given: set[str], ranks: Ranks = SINGLE_PROCESS) -> None:
    """--recipe for a new training run: its values for the options not given. A resumed run
    has its checkpoint's; rendering and scoring read the model's from its checkpoint;
    --finetune keeps the listed defaults under auto (no recipe was measured for it)."""
    if options.inference or options.evaluate or options.resume:
        return
    if options.finetune and options.recipe == "auto":
        options.recipe = "plain"
    info = validate_pair_file(options.dataset) if options.dataset else None
    line = apply_recipe(options, given, info and info.source,
                        info.splits["train"].num_pairs if info else None)
    if line:
        check_options(options)      # the recipe's values beside the ones given
        if ranks.is_main:
            print(line)


def clip_workers(requested: int) -> int:
    cores = os.cpu_count() or 1
    if requested > cores:
        print(f"note: --num_workers {requested} is more than this machine's {cores} cores; "
              f"using {cores}")
        return cores
    return requested


def resolve_finetune(options) -> None:
    """--finetune trains the checkpoint's architecture (the options follow it, so options.json
    says what was really trained) for at most --finetune_steps batches."""
    if not options.finetune:
        return
    args = ModelArgs(**load_checkpoint(options.finetune)["model_args"])
    options.image_size, options.audio_seconds = args.image_size, args.audio_samples / SAMPLE_RATE
    options.noise_dim, options.condition = args.noise_dim, args.condition
    options.generator, options.discriminator = args.generator, args.discriminator
    options.d_channels = args.d_channels
    options.speech_encoder = args.speech_encoder
    options.max_steps = min(options.max_steps or options.finetune_steps, options.finetune_steps)


def train(options: Config, device, checkpoint: dict | None) -> None:
    """Train in this process, or in each of the processes torchrun started."""
    with process_group(device) as ranks:
        path = ranks.main_first(dataset_path, options)     # rank 0 makes the demo set's cache
        trainer.Trainer(options, ranks.device, path, resume=checkpoint, ranks=ranks).train()


def main(argv=None) -> int:
    parser = build_parser()
    try:
        options = parser.parse_args(argv)
        check_options(options)
        if options.serve_dashboard:
            from utils import serve_dashboard
            serve_dashboard(options.visdom_port)        # becomes the server; never returns
        checkpoint = None
        if options.resume:
            checkpoint, options = resumed(parser, argv, options)
        device = choose_device(options.device)
        ranks = ranks_from_environment()
        choose_recipe(options, given_options(parser, argv), ranks)
        config = resolve(options, device, ranks)
        check_processes_and_device(config, device, ranks)
        torch.backends.cudnn.benchmark = config.cudnn_benchmark and device.type == "cuda"
        if config.inference:
            inference.run_inference(config, device, None if config.audio else dataset_path(config))
        elif config.evaluate:
            inference.run_evaluation(config, device, dataset_path(config))
        else:
            train(config, device, checkpoint)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except trainer.StoppedBySignal as stop:
        print(f"stopped by {stop}: saved {stop.checkpoint}; continue with --resume latest "
              f"--save_path {options.save_path}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
