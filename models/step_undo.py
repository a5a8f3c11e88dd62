"""Taking an optimiser step back: a copy of its parameters, Adam state and loss scaler made
just before the step.

GanStep applies D's step before G's forward pass (G is judged by the updated D) but learns
whether D's loss was finite only in its one host-device synchronisation, after that pass.
When it was not, the copy puts D back as it was: weights, both Adam moments, the step
count (Adam's state is dropped again where the step created it) and the fp16 loss scaler.
D is the small half (2.8 M parameters at 64 px: a 34 MB copy per step).
"""
from __future__ import annotations

import torch


class TensorSnapshot:
    """Copies of a list of tensors, remade only when their shapes change: one foreach copy
    per device to save or restore them (on CUDA a clone per tensor is a launch and an
    allocation each: the default model's 55 buffers, every step)."""

    def __init__(self):
        self._copies: list[torch.Tensor] = []

    @torch.no_grad()
    def save(self, tensors: list[torch.Tensor]) -> None:
        if [(c.shape, c.dtype) for c in self._copies] != [(t.shape, t.dtype) for t in tensors]:
            self._copies = [torch.empty_like(t) for t in tensors]
        copy_by_device(self._copies, tensors)

    @torch.no_grad()
    def restore(self, tensors: list[torch.Tensor]) -> None:
        copy_by_device(tensors, self._copies)


class UndoableStep:
    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler):
        self.optimizer, self.scaler = optimizer, scaler
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self._snapshot = TensorSnapshot()
        self._had_state: list[bool] = []
        self._scaler_state: tuple = ()

    def _tensors(self) -> list[torch.Tensor]:
        """The parameters, then every tensor of their optimiser state, in a fixed order."""
        state = [t for p in self.parameters for t in self.optimizer.state.get(p, {}).values()
                 if isinstance(t, torch.Tensor)]
        return self.parameters + state

    @torch.no_grad()
    def save(self) -> None:
        self._snapshot.save(self._tensors())
        self._had_state = [bool(self.optimizer.state.get(p)) for p in self.parameters]
        if self.scaler.is_enabled():
            self._scaler_state = tuple(None if t is None else t.clone()
                                       for t in (self.scaler._scale, self.scaler._growth_tracker))

    @torch.no_grad()
    def restore(self) -> None:
        """Back to the last save(); the step in between may have created Adam's state."""
        for parameter, had in zip(self.parameters, self._had_state):
            if not had:
                self.optimizer.state.pop(parameter, None)
        self._snapshot.restore(self._tensors())
        if self.scaler.is_enabled():
            self.scaler._scale, self.scaler._growth_tracker = self._scaler_state


def copy_by_device(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """One foreach copy per device: Adam's step counters stay on the host (foreach, not
    capturable) while the weights and moments are on the GPU."""
    groups: dict[torch.device, list[int]] = {}
    for index, source in enumerate(sources):
        groups.setdefault(source.device, []).append(index)
    for indices in groups.values():
        torch._foreach_copy_([targets[i] for i in indices], [sources[i] for i in indices])
