"""--cuda_graph: a whole training step recorded once as a CUDA graph, then replayed.

Eager on an H200, a step of 64 faces at 64 px launches about 900 kernels: 6.4 ms of GPU
work behind 23-44 ms of host time (benchmarks/README.md). `--compile` graphs the networks
but leaves the losses, Adam and the snapshots outside. Here all of it is one graph: the
snapshot of the BatchNorm and spectral-norm buffers and of both halves' weights and Adam
state, G's forward pass, D's losses, backward and Adam step, G's losses, backward and Adam
step, and every figure stacked into one float64 tensor. Outside it: copying the batch into
the graph's inputs, drawing the wrong-pair partners, the one read of the figures and the
averaged generator's update. A replay writes the weights without bumping their version
counters, so the spectral-norm weights kept for eval-mode drawing are dropped after each
(on the first H200 run without this, the losses of the 50-step demo run matched the eager
run's to 4 digits but its held-out faces at epoch 2, drawn with epoch 1's kept weights, had
val L1 0.229 against 0.163).

A step with a non-finite loss applies nothing, as GanStep's: by the time the figures are
read the graph has taken both steps, so the snapshots put back D and G (D's step stands
when only G's loss was not finite) and the buffers. Adam is capturable (its step counts live
on the GPU); checkpoints store them on the host, as an eager run's.

Needs CUDA, one process, --d_iters 1, no --precision fp16 (its loss scaler decides on the
host), no loss with a gradient penalty (--loss wgan-gp) and no --compile. The first
WARMUP_STEPS steps run eagerly on a side stream: memory, cuBLAS and cuDNN settle before the
recording.
"""
from __future__ import annotations

import math

import torch

from models.blocks import spectral_norms
from models.gan_step import GanStep, NonFiniteLoss, backward_and_step, generator_fault
from models.step_undo import UndoableStep
from models.wrong_pairs import wrong_partners

WARMUP_STEPS = 3


def training_step(model, options, device: torch.device, ranks) -> GanStep:
    """GanStep, or its graphed form with --cuda_graph."""
    if options.cuda_graph:
        return GraphedGanStep(model, options, device, ranks)
    return GanStep(model, options, device, ranks)


class GraphedGanStep(GanStep):
    capturable_adam = True
    autocast_cache = False      # autocast's weight cache must not outlive a recording

    def __init__(self, model, options, device: torch.device, ranks):
        super().__init__(model, options, device, ranks)
        self.recorded = device.type == "cuda"     # on CPU (tests) the body runs unrecorded
        self.undo_g = UndoableStep(self.optimizer_g, self.scaler_g)
        self.spectral_norms = spectral_norms(model)     # listed once: the step is a hot path
        self.graph, self.inputs, self.figures, self.names = None, None, None, ()
        self.eager_steps = 0

    def __call__(self, batch, step: int) -> dict[str, float]:
        batch = [t.to(self.device, non_blocking=True) for t in batch]
        if self.recorded and self.eager_steps < WARMUP_STEPS:
            self.eager_steps += 1
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream())
            try:
                with torch.cuda.stream(side):
                    return super().__call__(batch, step)
            finally:
                torch.cuda.current_stream().wait_stream(side)
        partners = (wrong_partners(batch[2], self.options.seed, step)
                    if self.wrong_pairs and self.wrong_from_batch else None)
        if self.inputs is None:
            self.inputs = [t.clone() for t in batch] + ([partners.clone()] if partners is not None
                                                        else [])
        for static, given in zip(self.inputs, [*batch, partners]):
            static.copy_(given)
        if not self.recorded:
            self.figures = self._body()
        else:
            if self.graph is None:
                self._record()
            self.graph.replay()
        for norm in self.spectral_norms:
            norm.forget()
        return self._checked(dict(zip(self.names, self.figures.tolist())))

    def _record(self) -> None:
        # Copies made now, outside the graph; the recording fills them at every replay.
        self.statistics.save(list(self.model.buffers()))
        self.undo_d.save()
        self.undo_g.save()
        torch.cuda.synchronize(self.device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.figures = self._body()

    def _body(self) -> torch.Tensor:
        """One step with no host read: (number of figures,) float64."""
        self.compiled.step_begins()
        condition_input, real, speaker_id, wrong, *partners = self.inputs
        partners = partners[0] if partners else None
        real, wrong = (faces.contiguous(memory_format=self.compiled.memory_format)
                       for faces in (real, wrong))
        self.statistics.save(list(self.model.buffers()))
        self.undo_d.save()
        self.undo_g.save()
        with self.autocast():
            embedding, fake, logits = self.generator_side(condition_input)
        d_loss, d_values, real_features = self.discriminator_losses(
            real, fake.detach(), wrong, embedding.detach(), partners)
        backward_and_step(d_loss, self.optimizer_d, self.scaler_d)
        g_loss, g_values = self.generator_losses(real, fake, embedding, logits, speaker_id,
                                                 real_features)
        backward_and_step(g_loss, self.optimizer_g, self.scaler_g)
        figures = {**d_values, **g_values}
        self.names = tuple(figures)
        return torch.stack([t.detach().to(torch.float64) for t in figures.values()])

    def _checked(self, values: dict[str, float]) -> dict[str, float]:
        """The figures of a step both of whose halves were applied; a non-finite loss takes
        back what it must and raises NonFiniteLoss."""
        d_bad, g_bad = (not math.isfinite(values[name]) for name in ("d_loss", "g_loss"))
        if d_bad or g_bad:
            if d_bad:
                self.undo_d.restore()
            self.undo_g.restore()
            self.statistics.restore(list(self.model.buffers()))
            raise (NonFiniteLoss({"d_loss": values["d_loss"]}) if d_bad else
                   generator_fault(values["g_loss"], values))
        if self.ema:
            self.ema.update()
        return values

    def state_dict(self) -> dict:
        """As GanStep's, with Adam's step counts on the host (an eager run's layout)."""
        state = super().state_dict()
        for name in ("optimizer_g", "optimizer_d"):
            packed = state[name]
            packed["state"] = {key: {k: v.cpu() if k == "step" else v for k, v in entry.items()}
                               for key, entry in packed["state"].items()}
        return state
