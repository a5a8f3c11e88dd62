"""The parts of benchmarks/gpu_check.sh that are not a runtime.py or train_speed.py run.

    python benchmarks/gpu_check_parts.py info
    python benchmarks/gpu_check_parts.py profile --device cuda --batch_size 64
    python benchmarks/gpu_check_parts.py syncs --device cuda --steps 10
    torchrun --standalone --nproc_per_node 1 benchmarks/gpu_check_parts.py nccl --device cuda
    python benchmarks/gpu_check_parts.py compare A.pt B.pt
    python benchmarks/gpu_check_parts.py summary speed.json [speed_compiled.json ...]

Each prints one small table or a few lines; `--device cpu` runs the same code tiny on CPU
(gpu_check.sh's dry run).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import runtime  # noqa: E402
from models import ModelArgs, SpeechToFace  # noqa: E402
from models.compiled import COMPILE_MODES, memory_format_for  # noqa: E402
from models.gan_step import GanStep  # noqa: E402
from train_speed import fake_batch, print_table, synchronize  # noqa: E402

# Dense bf16 tensor-core peak of one H100 SXM / H200 (989 TFLOP/s without sparsity, NVIDIA's
# data sheets); the step's FLOPs are counted by train_speed.py (matmuls and convolutions).
PEAK_BF16_TFLOPS = 989.0
TARGETS = {(64, 64, "bf16"): 10_000, (256, 64, "bf16"): 25_000}   # samples/s, the H200 targets


def info(_) -> None:
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}, "
          f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        print(f"cuda:{index} {properties.name}, {properties.total_memory / 2**30:.0f} GiB, "
              f"compute capability {properties.major}.{properties.minor}, "
              f"bf16 supported: {torch.cuda.is_bf16_supported()}")
    from models.precision import cpu_runs_bf16_natively
    print(f"cpu: {torch.backends.cpu.get_cpu_capability()}, native bf16: "
          f"{cpu_runs_bf16_natively()}, {torch.get_num_threads()} threads")


def gan_step(device, batch_size: int, image_size: int, precision: str, compile_mode="off"):
    options = runtime.config_for(["--precision", precision, "--compile", compile_mode], device)
    model = SpeechToFace(ModelArgs(image_size=image_size, num_speakers=8))
    layout = memory_format_for(compile_mode, device)              # as the Trainer
    step = GanStep(model.to(device, memory_format=layout), options, device)
    batch = tuple(t.to(device) for t in fake_batch(batch_size, image_size,
                                                   model.args.audio_samples, 8))
    return step, batch


def profile(bench) -> None:
    """torch.profiler's table of one step after warm-up steps (four when compiled: CUDA
    graphs are recorded on the second or third call); the trace goes to --out. --sort host
    orders it by the host's own time, where a step is bound by the host."""
    from torch.profiler import ProfilerActivity
    device = torch.device(bench.device)
    step, batch = gan_step(device, bench.batch_size, bench.image_size, bench.precision,
                           bench.compile)
    warmup = 2 if bench.compile == "off" else 4
    for number in range(1, warmup + 1):
        step(batch, number)
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    started = time.perf_counter()
    with torch.profiler.profile(activities=activities) as prof:
        step(batch, warmup + 1)
        synchronize(device)
    print(f"one step, profiled: {1e3 * (time.perf_counter() - started):.1f} ms wall")
    order = ("self_cuda_time_total" if device.type == "cuda" and bench.sort == "device"
             else "self_cpu_time_total")
    print(prof.key_averages().table(sort_by=order, row_limit=bench.rows))
    if bench.out:
        prof.export_chrome_trace(str(Path(bench.out) / f"profile_{device.type}.json"))


def syncs(bench) -> None:
    """Host-device synchronisations per training step (Trainer.train_batch on the demo set,
    batches made on the device): CUDA's sync debug mode warns at each; on CPU, where it
    does not exist, the host reads GanStep makes are counted instead (tests/test_step_syncs.py)."""
    import trainer
    from data.demo import demo_dataset_path
    options = runtime.config_for([
        "--device", bench.device, "--batch_size", str(bench.batch_size), "--no_visdom",
        "--save_path", "gpu_check_syncs", "--data_on_device", "on", "--precision", bench.precision,
        "--num_workers", "0"], torch.device(bench.device))
    run = trainer.Trainer(options, torch.device(bench.device), demo_dataset_path())
    run.order.start(0, 0)
    batches = iter(run.train_loader)
    for _ in range(2):
        run.train_batch(next(batches))           # warm up: Adam's state, cuDNN's choices
    counts = []
    for _ in range(bench.steps):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if bench.device == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            counted = count_host_reads(run, batches)
            if bench.device == "cuda":
                torch.cuda.set_sync_debug_mode("default")
        # (not the one warning that the debug mode itself is a prototype)
        found = [w for w in caught if "called a synchronizing" in str(w.message)]
        counts.append(len(found) if bench.device == "cuda" else counted)
        for w in found[:3] if len(counts) == 1 else []:
            print(f"  sync at {Path(w.filename).name}:{w.lineno}: {str(w.message)[:100]}")
    kind = ("sync debug warnings" if bench.device == "cuda"
            else "host reads (CPU, taking CUDA's path)")
    print(f"{kind} per training step over {bench.steps} steps: {counts} "
          f"(max {max(counts)}; target <= 1)")


def count_host_reads(run, batches) -> int:
    """One Trainer step; on CPU, the tensor reads GanStep makes (as tests/test_step_syncs.py)."""
    if run.device.type == "cuda":
        run.train_batch(next(batches))
        return 0
    from tests.test_step_syncs import READS
    calls, originals = [], {name: getattr(torch.Tensor, name) for name in READS}
    steps = [s["step"] for o in (run.gan_step.optimizer_d, run.gan_step.optimizer_g)
             for s in o.state.values()]

    def counting(name):
        def wrapper(tensor, *args, **kwargs):
            if not any(tensor is t for t in steps):
                calls.append(name)
            return originals[name](tensor, *args, **kwargs)
        return wrapper
    batch = next(batches)
    run.gan_step.defer_d_check = True     # CUDA's path (on CPU D's loss is read apart)
    try:
        for name in READS:
            setattr(torch.Tensor, name, counting(name))
        run.gan_step(batch, run.step + 1)
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)
    run.step += 1
    return len(calls)


def nccl(bench) -> None:
    """Under torchrun: a real process group (NCCL on CUDA, gloo on CPU) even for one process,
    DDP-wrapped halves, and timed steps. Runs with one process that the runtime would leave
    undistributed, so the DDP and all-reduce code paths run on a single GPU."""
    import os
    from dataclasses import dataclass
    import torch.distributed as dist
    from utils import Ranks

    @dataclass(frozen=True)
    class GroupOfOne(Ranks):
        @property
        def distributed(self) -> bool:
            return True

    device = torch.device(bench.device, int(os.environ.get("LOCAL_RANK", 0))) \
        if bench.device == "cuda" else torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    try:
        ranks = GroupOfOne(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)
        options = runtime.config_for(["--precision", bench.precision], device, ranks)
        model = SpeechToFace(ModelArgs(image_size=bench.image_size, num_speakers=8))
        step = GanStep(model.to(device, memory_format=torch.channels_last), options, device, ranks)
        batch = tuple(t.to(device) for t in fake_batch(bench.batch_size, bench.image_size,
                                                       model.args.audio_samples, 8))
        times = []
        for number in range(1, bench.steps + 3):
            synchronize(device)
            started = time.perf_counter()
            figures = step(batch, number)
            synchronize(device)
            times.append(time.perf_counter() - started)
        print(f"{dist.get_backend()} process group of {ranks.world_size}, DDP halves: "
              f"{statistics.median(times[2:]) * 1000:.1f} ms/step at batch {bench.batch_size}, "
              f"{bench.image_size} px, {options.precision}; d_loss {figures['d_loss']:.3f}")
    finally:
        dist.destroy_process_group()


def compare(bench) -> None:
    """Two checkpoints' networks and optimisers: bit for bit, else the largest difference."""
    from utils import load_checkpoint
    a, b = load_checkpoint(bench.first), load_checkpoint(bench.second)
    print(f"steps {a['step']} and {b['step']}")
    for key in ("networks", "optimizer_d", "optimizer_g"):
        left, right = flat_tensors(a[key]), flat_tensors(b[key])
        differing = [k for k in left if not torch.equal(left[k], right[k])]
        largest = max(((left[k].double() - right[k].double()).abs().max().item(), k)
                      for k in differing) if differing else (0.0, "")
        print(f"{key}: {len(left)} tensors, " + ("bit-identical" if not differing else
              f"{len(differing)} differ, largest |difference| {largest[0]:.3g} in {largest[1]}"))


def flat_tensors(state, prefix="") -> dict:
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state)
    return {k: v for key, value in items if isinstance(value, (dict, list, tuple, torch.Tensor))
            for k, v in flat_tensors(value, f"{prefix}.{key}").items()}


def summary(bench) -> None:
    """The step rows of train_speed.py --json files: fraction of the bf16 peak, the issue's
    targets, and the data path's rate against the step's."""
    rows, data = [], []
    for path in bench.files:
        if Path(path).exists():
            content = json.loads(Path(path).read_text())
            rows += content["steps"]
            data += content["data"]
    for row in rows:
        row["% bf16 peak"] = 100 * row["TFLOP/s"] / PEAK_BF16_TFLOPS
        target = TARGETS.get((row["batch"], row["size"], row["precision"]))
        row["target"] = f"{target} {'met' if row['samples/s'] >= target else 'NOT met'}" \
            if target and row["device"] == "cuda" else ""
    print_table(rows, ["device", "precision", "compile", "batch", "size", "first s",
                       "samples/s", "TFLOP/s", "% bf16 peak", "target"], width=12)
    for row in data:
        steps = [r["samples/s"] for r in rows
                 if (r["size"], r["batch"]) == (row["size"], row["batch"])]
        ratio = (f"{row['samples/s'] / max(steps):.1f}x the fastest step of that batch"
                 if steps else "no step of that batch to compare")
        print(f"data path {row['data']}, batch {row['batch']}: {row['samples/s']:.0f} samples/s, "
              f"{ratio} (target >= 3x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info")
    for name in ("profile", "syncs", "nccl"):
        command = commands.add_parser(name)
        command.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
        command.add_argument("--batch_size", type=int, default=64)
        command.add_argument("--image_size", type=int, default=64)
        command.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
        command.add_argument("--steps", type=int, default=10)
        command.add_argument("--rows", type=int, default=25)
        command.add_argument("--out", default=None)
        command.add_argument("--compile", default="off", choices=COMPILE_MODES)
        command.add_argument("--sort", default="device", choices=("device", "host"))
    command = commands.add_parser("compare")
    command.add_argument("first")
    command.add_argument("second")
    command = commands.add_parser("summary")
    command.add_argument("files", nargs="+")
    bench = parser.parse_args()
    globals()[bench.command](bench)


if __name__ == "__main__":
    main()
