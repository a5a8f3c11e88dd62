"""Entry point: parse options, check them, and dispatch to training or inference.

    python runtime.py                                   # train on the embedded demo set
    python runtime.py --dataset pairs.h5 --epochs 50    # train on your own pair file
    python runtime.py --inference --pre_trained_gen checkpoints/run/latest.pt --audio me.wav
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from utils import UserError

IMAGE_SIZES = (64, 128)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a speech-conditioned face GAN (wav2pix) or render faces from speech.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    wav2pix = parser.add_argument_group("wav2pix options (same names and defaults)")
    wav2pix.add_argument("--lr_D", type=float, default=0.0004, help="discriminator learning rate")
    wav2pix.add_argument("--lr_G", type=float, default=0.0001,
                         help="learning rate of generator, speech encoder and speaker classifier")
    wav2pix.add_argument("--vis_screen", default="gan", help="visdom environment name")
    wav2pix.add_argument("--save_path", default="run",
                         help="run name: checkpoints/<save_path>/ and results/<save_path>/")
    wav2pix.add_argument("--l1_coef", type=float, default=50, help="weight of L1 to the true face")
    wav2pix.add_argument("--l2_coef", type=float, default=100, help="weight of feature matching")
    wav2pix.add_argument("--softmax_coef", type=float, default=20,
                         help="weight of the speaker classifier's cross-entropy")
    wav2pix.add_argument("--pre_trained_disc", default=None,
                         help="checkpoint (or run folder) to start the discriminator from")
    wav2pix.add_argument("--pre_trained_gen", default=None,
                         help="checkpoint (or run folder) to start encoder and generator from; "
                              "with --inference, the model to render with")
    wav2pix.add_argument("--batch_size", type=int, default=64)
    wav2pix.add_argument("--num_workers", type=int, default=8,
                         help="DataLoader workers (clipped to the number of cores)")
    wav2pix.add_argument("--epochs", type=int, default=200)
    wav2pix.add_argument("--image_size", type=int, default=64, help="64 or 128")
    wav2pix.add_argument("--inference", action="store_true",
                         help="render faces instead of training")
    ours = parser.add_argument_group("further options")
    ours.add_argument("--dataset", default=None,
                      help="HDF5 pair file (see data/schema.py); default: the embedded demo set")
    ours.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ours.add_argument("--seed", type=int, default=0)
    ours.add_argument("--audio_seconds", type=float, default=1.0,
                      help="speech the encoder reads per face, 0.3 to 4 s")
    ours.add_argument("--noise_dim", type=int, default=0,
                      help="noise vector size fed to G beside the speech (0: none, as wav2pix)")
    ours.add_argument("--checkpoint_every", type=int, default=10, help="epochs between checkpoints")
    ours.add_argument("--max_steps", type=int, default=0,
                      help="stop after this many training steps (0: no limit); for smoke tests")
    ours.add_argument("--audio", nargs="+", default=None, metavar="PATH",
                      help="with --inference: your own wav files or folders, one face per window")
    add_dashboard_options(parser)
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
    dashboard.add_argument("--serve_dashboard", action="store_true",
                           help="start a visdom server on this machine at --visdom_port, after "
                                "installing its JavaScript from npm if missing")


def check_dashboard_options(options) -> None:
    if not 1 <= options.visdom_port <= 65535:
        raise UserError(f"--visdom_port must be between 1 and 65535, got {options.visdom_port}")
    if not options.visdom_server.startswith(("http://", "https://")):
        raise UserError(f"--visdom_server must start with http:// or https://, "
                        f"got {options.visdom_server!r}")


def add_scaling_options(parser: argparse.ArgumentParser) -> None:
    scaling = parser.add_argument_group(
        "scaling up: several GPUs and machines (start with torchrun; --batch_size is per "
        "process), averaged generator, mixed precision")
    scaling.add_argument("--batchnorm", default="local", choices=("local", "sync", "frozen"),
                         help="local: each process normalises with its own batch; sync: "
                              "SyncBatchNorm over all processes (CUDA only); frozen: use the "
                              "stored running statistics (fine-tuning with small batches)")
    scaling.add_argument("--ema", action="store_true",
                         help="keep an exponential moving average of the generator side; "
                              "checkpoints save it and inference uses it")
    scaling.add_argument("--ema_decay", type=float, default=0.999,
                         help="weight of the old average at each step")
    scaling.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                         help="autocast dtype of forward passes (fp16 adds loss scaling)")


def check_options(options) -> None:
    """Reject values no run can use, each with a one-line reason."""
    positive = {"--lr_D": options.lr_D, "--lr_G": options.lr_G, "--batch_size": options.batch_size,
                "--epochs": options.epochs, "--checkpoint_every": options.checkpoint_every}
    for name, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{name} must be a positive number, got {value}")
    for name in ("l1_coef", "l2_coef", "softmax_coef"):
        value = getattr(options, name)
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"--{name} must be zero or positive, got {value}")
    if options.image_size not in IMAGE_SIZES:
        raise UserError(f"--image_size must be 64 or 128, got {options.image_size}")
    if not 0.3 <= options.audio_seconds <= 4.0:
        raise UserError(f"--audio_seconds must be between 0.3 and 4, got {options.audio_seconds}")
    for name in ("num_workers", "noise_dim", "max_steps", "seed"):
        if getattr(options, name) < 0:
            raise UserError(f"--{name} must not be negative, got {getattr(options, name)}")
    if options.audio and not options.inference:
        raise UserError("--audio renders faces and needs --inference")
    if not options.save_path or Path(options.save_path).is_absolute() or ".." in Path(options.save_path).parts:
        raise UserError("--save_path must be a plain relative name such as 'my_run'")
    check_dashboard_options(options)
    if not 0 < options.ema_decay < 1:
        raise UserError(f"--ema_decay must be between 0 and 1 (such as 0.999), got {options.ema_decay}")


def check_scaling(options, device, ranks) -> None:
    """Options that depend on the device and on how the processes were started."""
    if options.inference and ranks.distributed:
        raise UserError("--inference runs in one process; start it with python, not torchrun")
    if options.batchnorm == "sync" and device.type != "cuda":
        raise UserError("--batchnorm sync needs CUDA (PyTorch's SyncBatchNorm does not run on "
                        "CPU); use --batchnorm local or frozen")
    if options.precision == "bf16" and device.type == "cuda":
        import torch
        if not torch.cuda.is_bf16_supported():
            raise UserError("this GPU has no bfloat16 support; use --precision fp16 or fp32")


def dataset_path(options) -> Path:
    if options.dataset:
        return Path(options.dataset)
    from data.demo import demo_dataset_path
    return demo_dataset_path()


def main(argv=None) -> int:
    options = build_parser().parse_args(argv)
    try:
        check_options(options)
        if options.serve_dashboard:
            from utils import serve_dashboard
            serve_dashboard(options.visdom_port)        # becomes the server; never returns
        import distributed
        import trainer
        from utils import choose_device
        device = choose_device(options.device)
        check_scaling(options, device, distributed.ranks_from_environment())
        if options.inference:
            trainer.run_inference(options, device, None if options.audio else dataset_path(options))
        else:
            options.num_workers = trainer.clip_workers(options.num_workers)
            with distributed.process_group(device) as (ranks, device):
                path = ranks.main_first(dataset_path, options)   # rank 0 makes the demo cache
                trainer.Trainer(options, device, path, ranks).train()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
