"""Time a full training iteration and each of its parts; print one table.

    python benchmarks/train_speed.py                       # cpu; cuda too when present
    python benchmarks/train_speed.py --batch_sizes 64 --image_sizes 64 --repeats 7
    python benchmarks/train_speed.py --precisions fp32 bf16     # autocast (--precision)
    python benchmarks/train_speed.py --devices cuda --compile   # torch.compile (--compile)
    python benchmarks/train_speed.py --devices cuda --cuda_graph   # the step as one CUDA graph

Each row: median seconds per iteration over --repeats timed iterations (after --warmup),
samples/s, and the median time of each labelled part of GanStep (torch.profiler ranges:
encoder+G forward, D forward, D backward+Adam, G-side losses, G backward+Adam).
A second table times the data path alone over the demo set: the DataLoader with each
--loader_workers count, and batches made on each device from the split held there
(--data_on_device); compare its samples/s with the step's. --json writes both tables.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runtime  # noqa: E402
from models import ModelArgs, SpeechToFace  # noqa: E402
from models.compiled import COMPILE_MODES, memory_format_for  # noqa: E402
from models.gan_step import GanStep  # noqa: E402
from models.graphed_step import training_step  # noqa: E402
from utils import SINGLE_PROCESS  # noqa: E402

PARTS = ("encoder_and_generator_forward", "discriminator_forward",
         "discriminator_backward_and_adam", "generator_losses_forward",
         "generator_backward_and_adam")


def fake_batch(batch_size: int, image_size: int, audio_samples: int, speakers: int):
    faces = lambda: torch.rand(batch_size, 3, image_size, image_size) * 2 - 1  # noqa: E731
    return (torch.randn(batch_size, 1, audio_samples), faces(),
            torch.randint(speakers, (batch_size,)), faces())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_step(step: GanStep, batch, device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` full steps (D and G) after `warmup` ones."""
    for _ in range(warmup):
        step(batch, step.d_iters)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        step(batch, step.d_iters)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def part_times(step: GanStep, batch, device) -> dict[str, float]:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step(batch, step.d_iters)
        synchronize(device)
    result = {}
    for event in prof.key_averages():
        if event.key in PARTS:
            total = event.device_time_total if device.type == "cuda" else event.cpu_time_total
            result[event.key] = total / 1e6
    return result


def bench_step(device, batch_size, image_size, options, warmup, repeats) -> dict:
    args = ModelArgs(image_size=image_size, num_speakers=8)
    model = SpeechToFace(args).to(device, memory_format=memory_format_for(options.compile, device))
    step = training_step(model, options, device, SINGLE_PROCESS)
    compile_started = time.perf_counter()
    step(tuple(t.to(device) for t in fake_batch(batch_size, image_size, args.audio_samples, 8)),
         step.d_iters)                     # compiles under --compile; the first step otherwise
    synchronize(device)
    first_step = time.perf_counter() - compile_started
    batch = tuple(t.to(device) for t in fake_batch(batch_size, image_size, args.audio_samples, 8))
    times = time_step(step, batch, device, warmup, repeats)
    median = statistics.median(times)
    # The same FLOPs compiled or graphed or not; the counter needs the eager step.
    eager = type(step) is GanStep and step.compiled.mode == "off"
    flops = iteration_flops(step if eager else GanStep(
        model, runtime.config_for(["--precision", options.precision], device), device),
        batch)
    return {"device": device.type, "precision": options.precision,
            "compile": step.compiled.mode + (" cuda-graph" if options.cuda_graph else "")
                       + (" cudnn-bench" if torch.backends.cudnn.benchmark
                          and device.type == "cuda" else ""),
            "batch": batch_size, "size": image_size, "first s": first_step,
            "s/iter": median, "samples/s": batch_size / median,
            "GFLOP/sample": flops / batch_size / 1e9, "TFLOP/s": flops / median / 1e12,
            **part_times(step, batch, device)}


def iteration_flops(step: GanStep, batch) -> float:
    """Matrix-multiply and convolution FLOPs of one iteration, forward and backward (what
    a fraction of a device's peak is computed from)."""
    with FlopCounterMode(display=False) as counter:
        step(batch, step.d_iters)
    return float(counter.get_total_flops())


def bench_loader(batch_size: int, workers: int, batches: int = 20, image_size: int = 64,
                 device: str | None = None) -> float:
    """Pairs per second of the data path alone: the training DataLoader with `workers`, or
    with `device` the batches data/device_batches.py makes there (synchronised per batch)."""
    from data.dataset import SpeechFaceDataset
    from data.demo import demo_dataset_path
    from data.device_batches import DeviceBatches
    from data.order import training_order
    from data.schema import validate_pair_file
    from torch.utils.data import DataLoader
    info = validate_pair_file(demo_dataset_path())
    dataset = SpeechFaceDataset(info, "train", 16000, image_size, train=True)
    order = training_order(len(dataset), batch_size, seed=0)
    if device:
        loader = DeviceBatches(dataset, order, batch_size, torch.device(device))
    else:
        loader = DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=workers,
                            drop_last=True, persistent_workers=workers > 0)
    count, start = 0, None
    for epoch in range(1 + batches * batch_size // len(dataset)):
        order.start(epoch)
        for batch in loader:
            synchronize(batch[1].device)
            if start is None:                        # the first batch starts the workers
                start = time.perf_counter()
            elif (count := count + 1) == batches:
                return count * batch_size / (time.perf_counter() - start)
    return count * batch_size / (time.perf_counter() - start)


def print_table(rows: list[dict], columns: list[str], width: int = 14) -> None:
    print(" | ".join(f"{c:>{width}}" for c in columns))
    print("-+-".join("-" * width for _ in columns))
    for row in rows:
        cells = [row.get(c, "") for c in columns]
        print(" | ".join(f"{c:>{width}.4g}" if isinstance(c, float) else f"{c!s:>{width}}"
                         for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--image_sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--devices", nargs="+",
                        default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precisions", nargs="+", default=["fp32"],
                        choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--loader_workers", type=int, nargs="*", default=[0, 2])
    parser.add_argument("--compile", nargs="?", const="auto", default="off",
                        choices=COMPILE_MODES, metavar="MODE",
                        help="torch.compile the step's halves, as runtime.py --compile")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--cudnn_benchmark", action="store_true",
                        help="let cuDNN time its algorithms per layer shape (CUDA)")
    parser.add_argument("--cuda_graph", action="store_true",
                        help="the whole step as one CUDA graph, as runtime.py --cuda_graph")
    bench = parser.parse_args()
    torch.backends.cudnn.benchmark = bench.cudnn_benchmark
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for d in bench.devices:
        for p in bench.precisions:
            for s in bench.image_sizes:
                for b in bench.batch_sizes:
                    options = runtime.config_for(
                        ["--precision", p, "--compile", bench.compile]
                        + (["--cuda_graph"] if bench.cuda_graph else []), torch.device(d))
                    try:
                        rows.append(bench_step(torch.device(d), b, s, options, bench.warmup,
                                               bench.repeats))
                    except (RuntimeError, torch.OutOfMemoryError) as error:   # compile, memory
                        print(f"failed: {d} {p} {s} px batch {b}: "
                              f"{str(error).splitlines()[0][:200]}", flush=True)
                        continue
                    print(f"done: {d} {p} {s} px batch {b}: {rows[-1]['samples/s']:.1f} "
                          "samples/s", flush=True)     # a cut-off run keeps what it measured
    print_table(rows, ["device", "precision", "compile", "batch", "size", "first s", "s/iter",
                       "samples/s", "GFLOP/sample", "TFLOP/s", *PARTS])
    # At each batch size, so that the data path is held against the step it would feed.
    size = bench.image_sizes[0]
    loader_rows = [{"batch": b, "size": size, "data": f"{w} workers",
                    "samples/s": bench_loader(b, w, image_size=size)}
                   for b in bench.batch_sizes for w in bench.loader_workers]
    loader_rows += [{"batch": b, "size": size, "data": f"on {d}",
                     "samples/s": bench_loader(b, 0, image_size=size, device=d)}
                    for b in bench.batch_sizes for d in bench.devices]
    print()
    print_table(loader_rows, ["batch", "size", "data", "samples/s"])
    if bench.json:
        bench.json.write_text(json.dumps({"steps": rows, "data": loader_rows}, indent=1))


if __name__ == "__main__":
    main()
