"""The networks of the speech-to-face GAN, built together from one ModelArgs.

The condition encoder (speech encoder, or embedding projector), the face generator (DCGAN
or AdaIN), the speaker classifier and the projection discriminator; an unconditional model
(`condition="none"`) has neither encoder nor classifier, and its D no projection term.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn

from models.adain_generator import AdaINFaceGenerator, AdaINGeneratorConfig
from models.blocks import BATCH_NORMS
from models.embedding_projector import EmbeddingProjector, EmbeddingProjectorConfig
from models.face_generator import IMAGE_SIZES, FaceGenerator, FaceGeneratorConfig
from models.filterbank_encoder import FilterbankEncoder, FilterbankEncoderConfig
from models.ge2e_encoder import GE2EEncoder, GE2EEncoderConfig
from models.projection_discriminator import ProjectionDiscriminator, ProjectionDiscriminatorConfig
from models.speaker_classifier import SpeakerClassifier
from models.speech_encoder import SpeechEncoder, SpeechEncoderConfig

__all__ = ["CONDITIONS", "DISCRIMINATORS", "GENERATORS", "IMAGE_SIZES", "SPEECH_ENCODERS",
           "ModelArgs", "SpeechToFace"]

CONDITIONS = ("speech", "none", "embedding")
# A speech encoder is one file with a network and its config (audio_samples, embedding_dim),
# plus one line here; the attribute stays `speech_encoder` (a checkpoint key) whichever it is.
SPEECH_ENCODERS = {"segan": (SpeechEncoder, SpeechEncoderConfig),
                   "filterbank": (FilterbankEncoder, FilterbankEncoderConfig),
                   "filterbank_frames": (FilterbankEncoder,
                                         partial(FilterbankEncoderConfig, keep_frames=True)),
                   "filterbank_centre": (FilterbankEncoder, partial(
                       FilterbankEncoderConfig, keep_frames=True, centre_frames=5)),
                   "ge2e": (GE2EEncoder, GE2EEncoderConfig),
                   "ge2e_finetune": (GE2EEncoder, partial(GE2EEncoderConfig, finetune=True))}
GENERATORS = {"dcgan": (FaceGenerator, FaceGeneratorConfig),
              "resize": (FaceGenerator, partial(FaceGeneratorConfig, upsample="resize")),
              "bilinear": (FaceGenerator, partial(FaceGeneratorConfig, upsample="bilinear")),
              "hybrid": (FaceGenerator, partial(FaceGeneratorConfig, upsample="hybrid")),
              "adain": (AdaINFaceGenerator, AdaINGeneratorConfig)}
DISCRIMINATORS = {"dcgan": 0, "sagan": 32}   # the feature size D's self-attention works on


@dataclass
class ModelArgs:
    """Everything needed to rebuild the networks; stored in every checkpoint. The defaults are
    what a checkpoint that predates an entry was built with (runtime's resume reads them so)."""
    image_size: int = 64
    audio_samples: int = 16000
    num_speakers: int = 8
    noise_dim: int = 0
    embedding_dim: int = 128
    condition: str = "speech"       # speech | none | embedding: what G draws the face from
    condition_dim: int = 0          # E of the stored vectors when condition is "embedding"
    generator: str = "dcgan"        # dcgan | resize | bilinear | hybrid | adain
    speech_encoder: str = "segan"   # segan | filterbank | ge2e | ge2e_finetune (condition speech)
    discriminator: str = "dcgan"    # dcgan | sagan (self-attention at 32x32)
    d_channels: int = 64            # D's first conv; each stride-2 conv doubles it, to 512

    def differences(self, other: "ModelArgs") -> list[str]:
        mine, theirs = asdict(self), asdict(other)
        return [f"{k} {theirs[k]} vs {mine[k]}" for k in mine if mine[k] != theirs[k]]


class SpeechToFace(nn.Module):
    """condition encoder -> face_generator, with the speaker classifier and the discriminator."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        if args.condition == "none" and args.noise_dim == 0:
            raise ValueError("an unconditional model (condition 'none') needs noise_dim > 0")
        self.args = args
        if args.condition == "speech":
            encoder, encoder_config = SPEECH_ENCODERS[args.speech_encoder]
            self.speech_encoder = encoder(encoder_config(
                audio_samples=args.audio_samples, embedding_dim=args.embedding_dim))
        elif args.condition == "embedding":
            self.embedding_projector = EmbeddingProjector(EmbeddingProjectorConfig(
                input_dim=args.condition_dim, embedding_dim=args.embedding_dim))
        code_dim = args.embedding_dim if self.conditioned else 0
        generator, generator_config = GENERATORS[args.generator]
        self.face_generator = generator(generator_config(
            image_size=args.image_size, embedding_dim=code_dim, noise_dim=args.noise_dim))
        if self.conditioned:
            self.speaker_classifier = SpeakerClassifier(args.embedding_dim, args.num_speakers)
        self.projection_discriminator = ProjectionDiscriminator(ProjectionDiscriminatorConfig(
            image_size=args.image_size, embedding_dim=code_dim, base_channels=args.d_channels,
            attention_size=DISCRIMINATORS[args.discriminator]))

    @property
    def conditioned(self) -> bool:
        return self.args.condition != "none"

    def generator_part_names(self) -> tuple[str, ...]:
        """The sub-networks G's optimiser trains and --pre_trained_gen loads (as wav2pix:
        condition encoder, generator and speaker classifier), those this model has."""
        names = ("speech_encoder", "embedding_projector", "face_generator", "speaker_classifier")
        return tuple(name for name in names if hasattr(self, name))

    def generator_parameters(self):
        for name in self.generator_part_names():
            yield from getattr(self, name).parameters()

    def sample_noise(self, batch_size: int, device) -> torch.Tensor | None:
        if self.args.noise_dim == 0:
            return None
        return torch.randn(batch_size, self.args.noise_dim, device=device)

    def encode(self, condition_input: torch.Tensor) -> torch.Tensor:
        """The condition embedding (B, E): speech (B, 1, T) through the encoder, a stored
        vector (B, E_file) through the projector; (B, 0) for an unconditional model."""
        if self.args.condition == "speech":
            return self.speech_encoder(condition_input)
        if self.args.condition == "embedding":
            return self.embedding_projector(condition_input)
        return condition_input.new_zeros(len(condition_input), 0)

    @torch.no_grad()
    def refresh_batchnorm(self, condition_batches) -> None:
        """Precise BatchNorm statistics for G's side: every running mean and variance of the
        encoder, generator and speaker classifier becomes the exact average over the given
        batches, under the weights as they are now.

        The running averages training keeps (momentum 0.1) trail weights that moved on;
        eval-mode faces drawn with them scored 0.23 identity top-1 where these statistics
        gave 0.34 (300 demo steps; "precise BN", Wu & Johnson 2021). Only BatchNorm runs in
        train mode here: spectral norm's power iteration must not advance outside a step.
        """
        norms = [m for name in self.generator_part_names()
                 for m in getattr(self, name).modules() if isinstance(m, BATCH_NORMS)]
        was_training, momenta = self.training, [norm.momentum for norm in norms]
        self.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None                 # a plain mean over the batches
            norm.train()
        for condition_input in condition_batches:
            embedding, _ = self(condition_input)
            if self.conditioned:
                self.speaker_classifier(embedding)
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        self.train(was_training)

    def forward(self, condition_input: torch.Tensor):
        """condition input (waveform (B, 1, T), vector (B, E_file) or (B, 0)) ->
        (condition embedding (B, E), faces (B, 3, S, S))."""
        embedding = self.encode(condition_input)
        noise = self.sample_noise(len(condition_input), condition_input.device)
        return embedding, self.face_generator(embedding, noise)
