"""--compile: torch.compile of GAN training's two halves (the generator side and D).

The compiled objects only call the model's own modules, so `model.state_dict()` (what a
checkpoint saves) keeps its plain keys, never `_orig_mod.`. Shapes are static in training
(drop_last: every batch has --batch_size pairs), so graphs are traced with dynamic=False:
one graph per shape (D sees 3B pairs in its step and B in G's).

Modes: `auto` is `reduce-overhead` on CUDA (inductor plus CUDA graphs, which replay a
step's kernels with one launch; needs the static shapes above) and `default` on CPU
(inductor's C++/OpenMP kernels); `default`, `reduce-overhead`, `max-autotune` are
torch.compile's own; `aot_eager` traces forward and backward as compile does and runs them
with PyTorch's kernels: no code generation, seconds instead of minutes, for checking that
a model traces.
"""
from __future__ import annotations

import torch

COMPILE_MODES = ("off", "auto", "default", "reduce-overhead", "max-autotune", "aot_eager")


def compile_mode_for(mode: str, device: torch.device) -> str:
    if mode == "auto":
        return "reduce-overhead" if device.type == "cuda" else "default"
    return mode


def memory_format_for(mode: str, device: torch.device) -> torch.memory_format:
    """channels_last: 10-20% faster 2-D convolutions on CPU (benchmarks/README.md). Compiled
    by inductor on CUDA, channels_last D failed a stride check in convolution_backward
    (torch 2.11, H200, benchmarks/README.md), so the networks stay contiguous there."""
    mode = compile_mode_for(mode, device)
    if device.type == "cuda" and mode not in ("off", "aot_eager"):
        return torch.contiguous_format
    return torch.channels_last


def compiled(module, mode: str):
    if mode == "aot_eager":
        return torch.compile(module, backend="aot_eager", dynamic=False)
    return torch.compile(module, mode=mode, dynamic=False)


class CompiledHalves:
    """What GanStep calls: the generator side and D (DDP-wrapped under torchrun) and the
    plain D that judges G's faces, compiled or as they are."""

    def __init__(self, gan_step, mode: str, device: torch.device):
        self.mode = compile_mode_for(mode, device)
        self.cuda_graphs = self.mode == "reduce-overhead" and device.type == "cuda"
        self.memory_format = memory_format_for(mode, device)
        halves = (gan_step.generator_side, gan_step.discriminator,
                  gan_step.model.projection_discriminator)
        if self.mode != "off":
            halves = tuple(compiled(module, self.mode) for module in halves)
        self.generator_side, self.discriminator, self.plain_discriminator = halves

    def step_begins(self) -> None:
        """CUDA graphs reuse their output memory from one replay to the next; marking each
        training step tells them the previous step's outputs are no longer read."""
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
