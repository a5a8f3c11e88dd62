"""The four networks of the speech-to-face GAN, built together from one ModelArgs."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from models.face_generator import IMAGE_SIZES, FaceGenerator, FaceGeneratorConfig
from models.projection_discriminator import ProjectionDiscriminator, ProjectionDiscriminatorConfig
from models.speaker_classifier import SpeakerClassifier
from models.speech_encoder import SpeechEncoder, SpeechEncoderConfig

__all__ = ["IMAGE_SIZES", "ModelArgs", "SpeechToFace", "sample_noise"]


@dataclass
class ModelArgs:
    """Everything needed to rebuild the networks; stored in every checkpoint."""
    image_size: int = 64
    audio_samples: int = 16000
    num_speakers: int = 8
    noise_dim: int = 0
    embedding_dim: int = 128

    def differences(self, other: "ModelArgs") -> list[str]:
        mine, theirs = asdict(self), asdict(other)
        return [f"{k} {theirs[k]} vs {mine[k]}" for k in mine if mine[k] != theirs[k]]


def sample_noise(args: ModelArgs, batch_size: int, device) -> torch.Tensor | None:
    """G's noise input (B, noise_dim), or None when the speech alone decides the face."""
    if args.noise_dim == 0:
        return None
    return torch.randn(batch_size, args.noise_dim, device=device)


class SpeechToFace(nn.Module):
    """speech_encoder -> face_generator, with the speaker classifier and the discriminator."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.speech_encoder = SpeechEncoder(SpeechEncoderConfig(
            audio_samples=args.audio_samples, embedding_dim=args.embedding_dim))
        self.face_generator = FaceGenerator(FaceGeneratorConfig(
            image_size=args.image_size, embedding_dim=args.embedding_dim, noise_dim=args.noise_dim))
        self.speaker_classifier = SpeakerClassifier(args.embedding_dim, args.num_speakers)
        self.projection_discriminator = ProjectionDiscriminator(ProjectionDiscriminatorConfig(
            image_size=args.image_size, embedding_dim=args.embedding_dim))

    def generator_parameters(self):
        """What G's optimiser trains: encoder, generator and speaker classifier (as wav2pix)."""
        for module in (self.speech_encoder, self.face_generator, self.speaker_classifier):
            yield from module.parameters()

    def sample_noise(self, batch_size: int, device) -> torch.Tensor | None:
        return sample_noise(self.args, batch_size, device)

    def forward(self, waveform: torch.Tensor):
        """waveform (B, 1, T) -> (speech embedding (B, E), faces (B, 3, S, S))."""
        embedding = self.speech_encoder(waveform)
        faces = self.face_generator(embedding, self.sample_noise(len(waveform), waveform.device))
        return embedding, faces
