"""At most one host-device synchronisation per training step (GanStep), counted on CPU.

Every Tensor method that hands a value to the host (.item(), .tolist(), .cpu(), .numpy(),
bool/float/int/format of a tensor) is wrapped with a counter for the test's duration: on
CUDA each of those waits for the GPU. Adam's step counters are left out: with foreach and
without capturable they live on the host on every device, so reading them waits for
nothing. benchmarks/gpu_check.sh checks the same on a GPU with torch.cuda.set_sync_debug_mode.
"""
from __future__ import annotations

import pytest
import torch

import runtime
from models import ModelArgs, SpeechToFace
from models.gan_step import GanStep, NonFiniteLoss

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__",
         "__format__")


def gan_step(*flags: str, defer_d_check: bool = True) -> GanStep:
    """A GanStep on CPU taking CUDA's path (D's loss checked after D's step, in the one
    read; D's step taken back when it was not finite) unless `defer_d_check` is False."""
    options = runtime.config_for(["--precision", "fp32", *flags])
    torch.manual_seed(0)
    model = SpeechToFace(ModelArgs(image_size=64, audio_samples=4800, num_speakers=3,
                                   speech_encoder="filterbank", generator="resize"))
    step = GanStep(model.to(memory_format=torch.channels_last), options, torch.device("cpu"))
    assert not step.defer_d_check                  # CPU's own choice
    step.defer_d_check = defer_d_check
    return step


def batch(size: int = 2):
    generator = torch.Generator().manual_seed(1)
    faces = lambda: torch.rand(size, 3, 64, 64, generator=generator) * 2 - 1  # noqa: E731
    return (torch.randn(size, 1, 4800, generator=generator), faces(),
            torch.arange(size) % 3, faces())


class HostReads:
    """Counts host reads of tensors other than `ignored` (Adam's step counters)."""

    def __init__(self, monkeypatch, ignored):
        self.calls, self.ignored = [], ignored
        for name in READS:
            monkeypatch.setattr(torch.Tensor, name, self._counting(name, getattr(torch.Tensor, name)))

    def _counting(self, name, method):
        def wrapper(tensor, *args, **kwargs):
            if not any(tensor is t for t in self.ignored):
                self.calls.append(name)
            return method(tensor, *args, **kwargs)
        return wrapper


def adam_steps(step: GanStep) -> list[torch.Tensor]:
    return [state["step"] for optimizer in (step.optimizer_d, step.optimizer_g)
            for state in optimizer.state.values()]


@pytest.mark.parametrize("flags, number", [([], 1), (["--loss", "wgan-gp"], 1),
                                           (["--loss", "wgan-gp"], 5)],
                         ids=["d_and_g_step", "critic_step", "wgan_gp_g_step"])
def test_a_training_step_reads_the_device_once(monkeypatch, flags, number):
    step = gan_step(*flags)
    step(batch(), step.d_iters)              # Adam's state exists from here on
    reads = HostReads(monkeypatch, adam_steps(step))
    figures = step(batch(), number)
    assert reads.calls == ["tolist"], reads.calls
    assert all(type(v) is float for v in figures.values()) and "d_loss" in figures
    assert ("g_loss" in figures) == (number % step.d_iters == 0)


def test_a_poisoned_step_reads_once_and_takes_the_d_step_back(monkeypatch):
    step = gan_step()
    step(batch(), 1)
    discriminator = step.model.projection_discriminator
    adam_state = lambda: [v for s in step.optimizer_d.state.values() for v in s.values()]  # noqa: E731
    before = [p.clone() for p in discriminator.parameters()], [v.clone() for v in adam_state()]
    poisoned = list(batch())
    poisoned[0][0, 0, 10] = float("nan")
    reads = HostReads(monkeypatch, adam_steps(step))
    with pytest.raises(NonFiniteLoss) as fault:
        step(poisoned, 1)
    assert reads.calls == ["tolist"], reads.calls
    assert list(fault.value.losses) == ["d_loss"]
    monkeypatch.undo()
    assert all(torch.equal(a, b) for a, b in zip(discriminator.parameters(), before[0]))
    assert len(adam_state()) == len(before[1])
    assert all(torch.equal(a, b) for a, b in zip(adam_state(), before[1]))


def test_on_cpu_d_is_checked_before_its_step_and_not_copied(monkeypatch):
    """CPU's path: a host read waits for nothing, so D's loss is read before D's step (two
    reads in all) and D's weights are never copied."""
    step = gan_step(defer_d_check=False)
    step(batch(), 1)
    reads = HostReads(monkeypatch, adam_steps(step))
    step(batch(), 1)
    assert reads.calls == ["tolist", "tolist"] and step.undo_d._snapshot._copies == []
