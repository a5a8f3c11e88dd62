"""The networks a run starts from: a checkpoint's networks copied in (--pre_trained_gen,
--pre_trained_disc, --finetune), the architecture a run asks for, and the generator side a
checkpoint renders with (--inference, --evaluate)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from data.audio import SAMPLE_RATE
from data.schema import PairFileInfo, require_embeddings
from models import ModelArgs, SpeechToFace
from utils import UserError, load_checkpoint


def load_networks(model: SpeechToFace, checkpoint: dict, parts: tuple[str, ...], source,
                  key: str = "networks") -> None:
    """Copy the named sub-networks of a checkpoint's `key` entry into `model`, saying what
    does not fit (`key` "ema": the averaged generator of an --ema run)."""
    differences = model.args.differences(ModelArgs(**checkpoint["model_args"]))
    if any(not d.startswith("num_speakers") for d in differences):
        raise UserError(f"{source}: checkpoint was trained with a different architecture "
                        f"({', '.join(differences)}; checkpoint vs now)")
    for part in parts:
        own = getattr(model, part).state_dict()
        theirs = network_state(checkpoint, part, key)
        if part == "speaker_classifier" and any(theirs[k].shape != own[k].shape for k in own):
            print(f"note: {source} has another number of speakers; its speaker classifier "
                  "is not loaded")
            continue
        getattr(model, part).load_state_dict(theirs)


def network_state(checkpoint: dict, part: str, key: str = "networks") -> dict:
    """The state_dict of one sub-network (e.g. "face_generator") of a checkpoint."""
    return {k[len(part) + 1:]: v for k, v in checkpoint[key].items()
            if k.startswith(part + ".")}


def check_resume_architecture(args: ModelArgs, checkpoint: dict, source) -> None:
    """Resuming needs the very same networks (speakers included): say what differs."""
    differences = args.differences(ModelArgs(**checkpoint["model_args"]))
    if differences:
        raise UserError(f"{source}: cannot resume into another architecture "
                        f"({', '.join(differences)}; checkpoint vs now); drop the options "
                        "that change it")



def model_args_for(options, info: PairFileInfo, base: dict | None, num_speakers: int) -> ModelArgs:
    """The architecture the options ask for (with --finetune: the trained checkpoint's)."""
    o = options
    if base:
        args = replace(ModelArgs(**base["model_args"]), num_speakers=num_speakers)
    else:
        stored_width = info.embedding_dim if o.condition == "embedding" else 0
        args = ModelArgs(image_size=o.image_size,
                         audio_samples=round(o.audio_seconds * SAMPLE_RATE),
                         num_speakers=num_speakers, noise_dim=o.noise_dim,
                         condition=o.condition, condition_dim=stored_width,
                         generator=o.generator, discriminator=o.discriminator,
                         d_channels=o.d_channels, speech_encoder=o.speech_encoder)
    if args.condition == "embedding":
        require_embeddings(info, args.condition_dim or None)
    return args


def load_pretrained(model: SpeechToFace, options, base: dict | None) -> None:
    """--finetune's trained networks, or --pre_trained_gen's and --pre_trained_disc's."""
    if base:
        start_from_trained(model, base, options.finetune)
    if options.pre_trained_gen:
        checkpoint = load_checkpoint(options.pre_trained_gen)
        load_networks(model, checkpoint, model.generator_part_names(), options.pre_trained_gen)
    if options.pre_trained_disc:
        checkpoint = load_checkpoint(options.pre_trained_disc)
        load_networks(model, checkpoint, ("projection_discriminator",), options.pre_trained_disc)


# ---------------------------------------------------------------- fine-tuning (--finetune)

def finetune_base(options, info: PairFileInfo) -> tuple[dict | None, list[str], np.ndarray | None]:
    """With --finetune: the trained checkpoint, the speakers (its own keep their indices and
    the file's new ones follow) and the file's speaker renumbering (runtime.resolve_finetune
    has set the architecture and --max_steps). Without: (None, the file's speakers, None)."""
    if not options.finetune:
        return None, info.speaker_names, None
    base = load_checkpoint(options.finetune)
    names, speaker_map = extended_speakers(base["speaker_names"], info.speaker_names)
    new = names[len(base["speaker_names"]):]
    print(f"fine-tuning {options.finetune} for {options.max_steps} steps: "
          f"{len(base['speaker_names'])} trained speakers + {len(new)} new "
          f"({', '.join(new) or 'none'}); the architecture is the checkpoint's")
    return base, names, speaker_map


def extended_speakers(trained: list[str], in_file: list[str]) -> tuple[list[str], np.ndarray]:
    """The trained speakers, then the file's speakers they lack; and, for each of the
    file's speaker indices, its index in that list."""
    names = list(trained) + [name for name in in_file if name not in trained]
    return names, np.array([names.index(name) for name in in_file], dtype=np.int64)


def start_from_trained(model: SpeechToFace, checkpoint: dict, source) -> None:
    """Every network of a trained checkpoint; the speaker classifier keeps its trained rows
    first and gets fresh rows for the added speakers."""
    parts = [part for part in model.generator_part_names() if part != "speaker_classifier"]
    load_networks(model, checkpoint, (*parts, "projection_discriminator"), source)
    if model.conditioned:
        model.speaker_classifier.load_extended(network_state(checkpoint, "speaker_classifier"))




def generator_from_checkpoint(path, device: torch.device) -> tuple[SpeechToFace, dict]:
    """The generator side of a checkpoint: its averaged weights when the run kept them (--ema)."""
    checkpoint = load_checkpoint(path)
    model = SpeechToFace(ModelArgs(**checkpoint["model_args"]))
    averaged = "ema" in checkpoint
    load_networks(model, checkpoint, model.generator_part_names(), path,
                  "ema" if averaged else "networks")
    if averaged:
        print(f"note: drawing with the averaged generator of {path} (the run used --ema)")
    return model.to(device).eval(), checkpoint

