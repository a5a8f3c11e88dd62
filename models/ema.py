"""An exponential moving average of the generator side, as G_ema in StyleGAN2-ADA.

A GAN generator's weights keep oscillating around a good solution; their running average
draws steadier, cleaner faces (Yazici et al. 2019, "The unusual effectiveness of averaging
in GAN training"). The average covers everything G's optimiser trains: the condition
encoder, the face generator and the speaker classifier.
"""
from __future__ import annotations

import copy

import torch

from models import SpeechToFace


class GeneratorEma:
    """Averaged weights in a SpeechToFace of their own (without D), for drawing faces.

    Its state_dict keys are the model's (`speech_encoder.`, `face_generator.`, ...), so a
    checkpoint's `ema` entry loads like its `networks`.
    """

    def __init__(self, model: SpeechToFace, decay: float):
        self.decay, self.updates = decay, 0
        self.average = copy.deepcopy(model).eval().requires_grad_(False)
        del self.average.projection_discriminator       # D is never averaged
        live = dict(model.named_parameters())
        self._parameters = [(p, live[n]) for n, p in self.average.named_parameters()]
        live_buffers = dict(model.named_buffers())
        self._buffers = [(b, live_buffers[n]) for n, b in self.average.named_buffers()]

    def current_decay(self) -> float:
        """`decay`, ramped in over the first updates ((1 + t) / (10 + t), as TensorFlow's
        ExponentialMovingAverage) so a short run is not averaged with its random start."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """After each G step: average = decay * average + (1 - decay) * live weights.

        Buffers are copied, not averaged: BatchNorm's running statistics already average.
        """
        averaged, live = zip(*self._parameters)
        torch._foreach_lerp_(list(averaged), list(live), 1.0 - self.current_decay())
        for averaged_buffer, live_buffer in self._buffers:
            averaged_buffer.copy_(live_buffer)
        self.updates += 1

    def state_dict(self) -> dict:
        return self.average.state_dict()

    def load_state_dict(self, state: dict, updates: int) -> None:
        self.average.load_state_dict(state)
        self.updates = updates
