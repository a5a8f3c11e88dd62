"""The generator's loss terms, each declared once: its figure, how it is computed from the
generator step's tensors, the flag that weights it, and what a checkpoint saved before that
flag existed trained with. GanStep, the command line and the plot panel read `LOSS_TERMS`;
a new term is a pure function in models/losses.py plus one line there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from models.losses import (AdversarialLoss, feature_matching_loss, gradient_difference_loss,
                           mouth_l1, reconstruction_l1, speaker_softmax_loss)
from models.mouth_reader import mouth_open_loss


@dataclass(frozen=True)
class GeneratorHalf:
    """What G's step has at hand when its terms are computed."""
    fake: torch.Tensor              # (B, 3, S, S) the generated faces
    real: torch.Tensor              # (B, 3, S, S) the true frames
    fake_scores: torch.Tensor       # (B,) D's scores of the generated pairs
    fake_features: torch.Tensor     # D's trunk features of the generated pairs
    real_features: torch.Tensor     # D's trunk features of the real pairs, detached
    logits: torch.Tensor | None     # (B, K) speaker classifier's; None without a condition
    speaker_id: torch.Tensor        # (B,)
    adversarial: AdversarialLoss    # --loss
    mouth_reader: torch.nn.Module | None = None     # with --mouth_open_coef


@dataclass(frozen=True)
class LossTerm:
    name: str                                   # its figure in log.jsonl, g_*
    compute: Callable[[GeneratorHalf], torch.Tensor]
    flag: str | None = None                     # the option weighting it; None: weight 1
    default: float = 0.0
    help: str = ""
    group: str = "further"                      # --help group: "wav2pix" or "further"
    before: float | None = None                 # weight of runs saved before the flag existed
    needs_condition: bool = True                # a true frame or a speaker to compare with
    computed_at_zero: bool = True               # logged even when its weight is 0


# In the plot panel's order. A step computes and sums those without a condition first, then
# the others (the order of log.jsonl's figures and of the floating-point sum).
LOSS_TERMS = (
    LossTerm("g_adv", lambda half: half.adversarial.generator(half.fake_scores),
             needs_condition=False),
    LossTerm("g_l1", lambda half: reconstruction_l1(half.fake, half.real),
             "l1_coef", 50, "weight of L1 to the true face", "wav2pix"),
    LossTerm("g_fm", lambda half: feature_matching_loss(half.real_features, half.fake_features),
             "l2_coef", 100, "weight of feature matching", "wav2pix", needs_condition=False),
    LossTerm("g_softmax", lambda half: speaker_softmax_loss(half.logits, half.speaker_id),
             "softmax_coef", 20, "weight of the speaker classifier's cross-entropy", "wav2pix"),
    LossTerm("g_gdl", lambda half: gradient_difference_loss(half.fake, half.real),
             "gdl_coef", 50, "weight of the gradient difference loss to the true face (Mathieu "
             "et al. 2016): neighbouring-pixel differences matched, against texture (0: off, as "
             "wav2pix)", "further", before=0.0, computed_at_zero=False),
    LossTerm("g_mouth", lambda half: mouth_l1(half.fake, half.real),
             "mouth_coef", 0, "weight of L1 to the true face inside the mouth's box alone "
             "(models.losses.MOUTH_BOX), on top of --l1_coef: whether the mouth opens when the "
             "true one does", "further", before=0.0, computed_at_zero=False),
    LossTerm("g_mouth_open", lambda half: mouth_open_loss(half.mouth_reader, half.fake, half.real),
             "mouth_open_coef", 0, "weight of L1 between how open the generated and the true "
             "face's mouths are, read by a small network fitted to the train faces' lips before "
             "training (models/mouth_reader.py)", "further", before=0.0, computed_at_zero=False),
)


def loss_term_names() -> tuple[str, ...]:
    return tuple(term.name for term in LOSS_TERMS)


def loss_term_flags() -> tuple[str, ...]:
    return tuple(term.flag for term in LOSS_TERMS if term.flag)


def loss_term_defaults_before() -> dict[str, float]:
    """flag -> the weight a checkpoint saved before the flag existed trained with."""
    return {term.flag: term.before for term in LOSS_TERMS if term.before is not None}


def add_loss_term_options(group, which: str) -> None:
    """The weight flags of the `which` ("wav2pix" or "further") --help group, in order."""
    for term in LOSS_TERMS:
        if term.flag and term.group == which:
            group.add_argument(f"--{term.flag}", type=float, default=term.default, help=term.help)


def loss_term_weights(options) -> dict[str, float]:
    """name -> weight (a resumed run's options hold `before` for flags its checkpoint lacks,
    runtime.BEFORE_THEY_EXISTED)."""
    return {term.name: 1.0 if term.flag is None else getattr(options, term.flag)
            for term in LOSS_TERMS}


def computed_terms(conditioned: bool, weights: dict[str, float]) -> tuple[LossTerm, ...]:
    """The terms a step computes, in the order it sums and logs them: an unconditional model
    has no true frame or speaker, so only those needing neither."""
    ordered = ([term for term in LOSS_TERMS if not term.needs_condition]
               + [term for term in LOSS_TERMS if term.needs_condition and conditioned])
    return tuple(term for term in ordered if term.computed_at_zero or weights[term.name])
