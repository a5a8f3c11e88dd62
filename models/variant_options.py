"""The options that choose the GAN: its losses, networks and augmentation, and fine-tuning
(`python runtime.py --help`, group "GAN variants and fine-tuning"): how runtime.py adds them,
checks them, and fills the defaults that depend on other options."""
from __future__ import annotations

import argparse
import math

from models import CONDITIONS, DISCRIMINATORS, GENERATORS, SPEECH_ENCODERS
from models.augment import AUGMENTATIONS, augmentation_names
from models.losses import ADVERSARIAL_LOSSES
from models.speech_augment import SPEECH_AUGMENTATIONS
from models.wrong_pairs import WRONG_FACES
from utils import UserError

UNCONDITIONAL_NOISE_DIM = 100    # DCGAN's noise size (Radford et al. 2016)


def add_variant_options(parser: argparse.ArgumentParser) -> None:
    variants = parser.add_argument_group("GAN variants and fine-tuning")
    variants.add_argument("--loss", default="lsgan", choices=tuple(ADVERSARIAL_LOSSES),
                          help="adversarial loss: least squares (wav2pix), non-saturating "
                               "BCE, Wasserstein with gradient penalty, or hinge")
    variants.add_argument("--d_iters", type=int, default=None,
                          help="discriminator steps per generator step, each on its own batch; "
                               "None: 5 for wgan-gp, else 1")
    variants.add_argument("--gp_coef", type=float, default=10.0,
                          help="weight of the wgan-gp gradient penalty")
    variants.add_argument("--r1_coef", type=float, default=0.0,
                          help="R1 (Mescheder et al. 2018): D's loss adds r1_coef/2 x the "
                               "squared norm of its gradient at the real pairs (as D sees "
                               "them); 0: off")
    variants.add_argument("--cls", dest="cls", action="store_true", default=True,
                          help="GAN-CLS wrong-pair term: D learns to reject a face of another "
                               "speaker under the current condition (Reed et al. 2016)")
    variants.add_argument("--no_cls", dest="cls", action="store_false",
                          help="turn the wrong-pair term off (cls)")
    variants.add_argument("--wrong_faces", default="batch", choices=WRONG_FACES,
                          help="the wrong pairs' faces: batch: the batch's real faces of other "
                               "speakers, scored from D's features of them (a third less D "
                               "work); loader: one more face read per pair (wav2pix's way)")
    variants.add_argument("--condition", default="speech", choices=CONDITIONS,
                          help="what G draws from: speech; none (unconditional DCGAN on "
                               "noise); embedding (the pair file's <split>/embeddings vectors)")
    variants.add_argument("--speech_encoder", default="filterbank", choices=tuple(SPEECH_ENCODERS),
                          help="filterbank: learnable mel band-pass filters, log energies, "
                               "convolutions and mean+std pooling over time; segan: wav2pix's "
                               "strided convolutions flattened (to reproduce wav2pix); ge2e: "
                               "Resemblyzer's pretrained GE2E speaker encoder, frozen, with a "
                               "learned projection (ge2e_finetune trains it too)")
    variants.add_argument("--generator", default="resize", choices=tuple(GENERATORS),
                          help="resize: nearest x2 then 3x3 convolutions (no checkerboard); "
                               "bilinear: bilinear x2 then 3x3 convolutions; hybrid: nearest "
                               "up to 16x16, bilinear from there; "
                               "dcgan: stride-2 transposed convolutions (wav2pix); adain: the "
                               "condition sets every layer's AdaIN scale and shift, with "
                               "self-attention at 32x32")
    variants.add_argument("--discriminator", default="dcgan", choices=tuple(DISCRIMINATORS),
                          help="dcgan, or sagan: with a self-attention block at 32x32")
    variants.add_argument("--d_channels", type=int, default=64,
                          help="D's width: channels of its first convolution, doubled by each "
                               "stride-2 convolution up to 512 (64: 64-128-256-512 at 64 px)")
    variants.add_argument("--augment", default="none", metavar="POLICY",
                          help="DiffAugment: every face D sees, real and generated, augmented "
                               "in both steps; comma-separated from "
                               f"{', '.join(AUGMENTATIONS)} (e.g. color,translation,cutout)")
    variants.add_argument("--speech_augment", default="none", metavar="POLICY",
                          help="every training window of speech changed before the encoder "
                               "reads it, so the model learns what carries over to new speech "
                               "(models/speech_augment.py); comma-separated from "
                               f"{', '.join(SPEECH_AUGMENTATIONS)} (e.g. shift,noise,gain)")
    variants.add_argument("--mouth_refit_every", type=int, default=0, metavar="STEPS",
                          help="with --mouth_open_coef: every STEPS steps fit the mouth reader "
                               "on, on the generator's own faces labelled by dlib's lips, so G "
                               "cannot draw mouths only the reader reads as open "
                               "(models/mouth_refit.py); 0: the reader stays frozen")
    variants.add_argument("--finetune", default=None, metavar="CKPT",
                          help="fine-tune a trained checkpoint (or run folder) on --dataset, "
                               "adding its new speakers to the speaker classifier")
    variants.add_argument("--finetune_steps", type=int, default=200,
                          help="with --finetune: training steps (batches drawn with replacement)")
    variants.add_argument("--num_faces", type=int, default=64,
                          help="with --inference on an unconditional model: faces to draw")


def check_policy(flag: str, policy: str, registry: dict) -> None:
    """--FLAG POLICY names only augmentations of `registry` (or is none)."""
    unknown = set(augmentation_names(policy)) - set(registry)
    if unknown:
        named = ", ".join(repr(name) for name in sorted(unknown))
        raise UserError(f"--{flag} {policy}: no augmentation {named}; name some of "
                        f"{', '.join(registry)}, or none")


def check_variant_options(options) -> None:
    if options.d_iters is not None and options.d_iters < 1:
        raise UserError(f"--d_iters is the number of discriminator steps per generator step "
                        f"and must be at least 1, got {options.d_iters}")
    for name in ("gp_coef", "r1_coef"):
        if not (math.isfinite(getattr(options, name)) and getattr(options, name) >= 0):
            raise UserError(f"--{name} must be zero or positive, got {getattr(options, name)}")
    check_policy("augment", options.augment, AUGMENTATIONS)
    check_policy("speech_augment", options.speech_augment, SPEECH_AUGMENTATIONS)
    if augmentation_names(options.speech_augment) and options.condition != "speech":
        raise UserError(f"--speech_augment changes speech waveforms; --condition "
                        f"{options.condition} reads none: leave --speech_augment at none")
    if not 8 <= options.d_channels <= 512:
        raise UserError(f"--d_channels is D's first convolution's width, 8 to 512, got "
                        f"{options.d_channels}")
    for name in ("finetune_steps", "num_faces"):
        if getattr(options, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(options, name)}")
    if options.mouth_refit_every < 0:
        raise UserError(f"--mouth_refit_every must not be negative, got {options.mouth_refit_every}")
    if options.mouth_refit_every and not options.mouth_open_coef:
        raise UserError("--mouth_refit_every refits the mouth reader of --mouth_open_coef; "
                        "give --mouth_open_coef (such as 10) or leave --mouth_refit_every at 0")
    if options.finetune and (options.inference or options.evaluate):
        raise UserError("--finetune trains; render or evaluate the fine-tuned run afterwards")
    if options.finetune and not options.dataset:
        raise UserError("--finetune needs --dataset NEW.h5 holding the new speakers' pairs")
    if options.finetune and (options.pre_trained_gen or options.pre_trained_disc):
        raise UserError("--finetune already starts every network from its checkpoint; "
                        "drop --pre_trained_gen and --pre_trained_disc")
    from_checkpoint = (options.resume or options.inference or options.evaluate or options.finetune
                       or options.pre_trained_gen)
    if options.speech_encoder.startswith("ge2e") and options.condition == "speech" and not from_checkpoint:
        from models.ge2e_encoder import ge2e_weights_path
        ge2e_weights_path()     # a new model needs the wheel's weights; a checkpoint holds them


def resolve_variants(options) -> None:
    """Fill the defaults that depend on other options, so options.json records them."""
    if options.d_iters is None:
        options.d_iters = ADVERSARIAL_LOSSES[options.loss].critic_steps
    if options.condition == "none" and options.noise_dim == 0 and not options.inference:
        print(f"note: --condition none draws faces from noise alone; using --noise_dim "
              f"{UNCONDITIONAL_NOISE_DIM}")
        options.noise_dim = UNCONDITIONAL_NOISE_DIM
