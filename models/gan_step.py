"""One batch of GAN training apart from the loop: the losses composed into a discriminator
step and a generator step, with the optimisers, loss scalers and averaged generator they
update (`state_dict()` / `load_state_dict()` under a checkpoint's keys).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import record_function

from models import SpeechToFace
from models.augment import augmentation
from models.compiled import CompiledHalves
from models.ema import GeneratorEma
from models.loss_terms import GeneratorHalf, computed_terms, loss_term_weights
from models.losses import ADVERSARIAL_LOSSES, gradient_penalty, r1_penalty
from models.precision import AUTOCAST_DTYPES, autocast
from models.speech_augment import SPEECH_AUGMENTATIONS
from models.step_undo import TensorSnapshot, UndoableStep
from models.wrong_pairs import wrong_partners
from utils import SINGLE_PROCESS, Ranks, UserError


class NonFiniteLoss(Exception):
    """A NaN or infinite loss; the step it belongs to was not applied. `losses`: the figures."""

    def __init__(self, losses: dict[str, float]):
        super().__init__(describe_losses(losses))
        self.losses = losses



def generator_fault(g_loss: float, figures: dict[str, float]) -> NonFiniteLoss:
    """G's non-finite loss with its terms, which say where it came from."""
    terms = {k: v for k, v in figures.items() if k.startswith("g_") and k != "g_loss"}
    return NonFiniteLoss({"g_loss": g_loss, **terms})


def describe_losses(losses: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in losses.items() if not math.isfinite(v)) or "?"



class GeneratorSide(nn.Module):
    """The networks G's optimiser trains (condition encoder, face generator, speaker
    classifier) as one module, for DistributedDataParallel.

    DDP wraps whole modules, and the GAN's halves step apart, so this half is gathered here
    and D is wrapped on its own. The parameters are the model's own: checkpoints keep
    saving the plain `model.state_dict()`.
    """

    def __init__(self, model: SpeechToFace):
        super().__init__()
        self.parts = nn.ModuleDict({name: getattr(model, name)
                                    for name in model.generator_part_names()})
        object.__setattr__(self, "model", model)   # a plain reference: D is not one of the parts

    def forward(self, condition_input: torch.Tensor):
        """-> (embedding (B, E), faces (B, 3, S, S), speaker logits (B, K), or None
        without a condition)."""
        embedding, faces = self.model(condition_input)
        logits = self.model.speaker_classifier(embedding) if self.model.conditioned else None
        return embedding, faces, logits


def distributed_data_parallel(module: nn.Module, ranks: Ranks) -> nn.Module:
    """DDP when there are several processes (it broadcasts rank 0's weights now, averages
    gradients in backward and, before each forward, broadcasts rank 0's buffers: BatchNorm
    statistics and spectral norm's power-iteration vectors); the module itself when alone."""
    if not ranks.distributed:
        return module
    device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


class GanStep:
    """One batch of training, apart from the loop: a discriminator step, then a generator step.

    Holds the networks' optimizers (Adam, betas 0.5/0.999, as wav2pix); G's optimizer also
    trains the speech encoder and the speaker classifier. The adversarial loss is chosen by
    --loss; with --d_iters N only every N-th batch takes a G step, the others are
    critic steps, each on its own batch. Under torchrun both halves are DDP modules; with
    --ema the step keeps the averaged generator; with --precision fp16 a GradScaler per half.
    """

    capturable_adam = False     # Adam's step counts on the GPU, for a CUDA graph's recording
    autocast_cache = True

    def __init__(self, model: SpeechToFace, options, device: torch.device,
                 ranks: Ranks = SINGLE_PROCESS):
        self.model, self.options, self.device, self.ranks = model, options, device, ranks
        if options.precision not in ("fp32", *AUTOCAST_DTYPES):
            raise ValueError(f"--precision {options.precision} is resolved by runtime.resolve "
                             "before a step is built")
        # foreach: one op per step over all of a network's tensors, 49 ms for G and D on this
        # CPU against 79 ms for the per-tensor loop. Fused saves another 32 ms of a 1.24 s
        # step at wav2pix's sizes, but moved test_distributed's 1- against 2-process drift as
        # AVX2 from 2.4% to 4.9% (torch 2.13, 2-core AMD EPYC; gradients keep their parameters' strides under
        # DDP, so not a layout fault), so no.
        adam = {"betas": (0.5, 0.999), "foreach": True,
                "capturable": self.capturable_adam and device.type == "cuda"}
        self.optimizer_g = torch.optim.Adam(generator_groups(model, options), options.lr_G, **adam)
        self.optimizer_d = torch.optim.Adam(model.projection_discriminator.parameters(),
                                            options.lr_D, **adam)
        self.generator_side = distributed_data_parallel(GeneratorSide(model), ranks)
        self.discriminator = distributed_data_parallel(model.projection_discriminator, ranks)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        fp16 = options.precision == "fp16"
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=fp16)
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=fp16)
        # After DDP has broadcast rank 0's weights, so every process averages the same ones.
        self.ema = GeneratorEma(model, options.ema_decay) if options.ema else None
        self.mouth_reader = None    # with --mouth_open_coef: the trainer fits or restores it
        self.undo_d = UndoableStep(self.optimizer_d, self.scaler_d)
        self.statistics = TensorSnapshot()     # BN's and spectral norm's, taken back with a bad step
        self.defer_d_check = device.type == "cuda"
        self._choose_losses(options)
        # --compile: compiled callers of the same modules (the model's state_dict keeps
        # its plain keys); without it the modules themselves.
        self.compiled = CompiledHalves(self, options.compile, device)
        self.generator_side = self.compiled.generator_side
        self.discriminator = self.compiled.discriminator

    def _choose_losses(self, options) -> None:
        self.adversarial = ADVERSARIAL_LOSSES[options.loss]
        self.d_iters = options.d_iters or self.adversarial.critic_steps
        # Without a condition there is nothing to mismatch, no true frame and no speaker:
        # the wrong-pair, L1 and softmax terms need a conditioned model.
        self.wrong_pairs = options.cls and self.model.conditioned
        # --wrong_faces batch: the wrong pairs' faces are the batch's own real faces, scored
        # from D's features of them (models/wrong_pairs.py); loader: the faces it read.
        self.wrong_from_batch = options.wrong_faces == "batch"
        self.coefficients = loss_term_weights(options)
        self.loss_terms = computed_terms(self.model.conditioned, self.coefficients)
        self.augment = augmentation(options.augment)    # None: D sees the faces as they are
        self.speech_augment = augmentation(options.speech_augment, SPEECH_AUGMENTATIONS)

    def seen_by_d(self, faces: torch.Tensor) -> torch.Tensor:
        """The faces as D sees them: under --augment, each one augmented."""
        if self.augment is None:
            return faces
        return self.augment(faces).contiguous(memory_format=self.compiled.memory_format)

    def autocast(self):
        return autocast(self.options.precision, self.device, self.autocast_cache)

    def __call__(self, batch, step: int) -> dict[str, float]:
        """The figures of batch number `step` (1 for a run's first: with --d_iters N every
        N-th takes G's step); raises NonFiniteLoss, having applied nothing, when a loss is NaN
        or infinite in any process (D's step stands when only G's loss is).

        On CUDA one host-device synchronisation per call: after G's losses are computed,
        both losses' finiteness and every figure come back in one transfer (read_figures).
        D's step is applied before that (G is judged by the updated D), so it is taken back
        when D's loss was not finite (UndoableStep); G's step waits for the answer. On CPU,
        where reading a value waits for nothing, D's loss is read before its step instead
        and no copy of D is made (`defer_d_check`).
        """
        condition_input, real, speaker_id, wrong = (t.to(self.device, non_blocking=True)
                                                    for t in batch)
        real, wrong = (faces.contiguous(memory_format=self.compiled.memory_format)
                       for faces in (real, wrong))
        if self.speech_augment is not None:
            condition_input = self.speech_augment(condition_input)
        self.statistics.save(list(self.model.buffers()))
        self.compiled.step_begins()
        partners = (wrong_partners(speaker_id, self.options.seed, step)
                    if self.wrong_pairs and self.wrong_from_batch else None)
        try:
            if step % self.d_iters:
                return self.critic_step(condition_input, real, wrong, partners)
            with record_function("encoder_and_generator_forward"), self.autocast():
                # once per batch; D gets it detached
                embedding, fake, logits = self.generator_side(condition_input)
            undo = self.undo_d if self.defer_d_check else None
            if undo:
                undo.save()
            d_loss, d_values, real_features = self.discriminator_losses(
                real, fake.detach(), wrong, embedding.detach(), partners)
            if not undo:
                self.read_figures(d_values, ("d_loss",))   # on the host: nothing to wait for
            with record_function("discriminator_backward_and_adam"):
                backward_and_step(d_loss, self.optimizer_d, self.scaler_d)
            g_loss, g_values = self.generator_losses(real, fake, embedding, logits, speaker_id,
                                                     real_features)
            figures = self.read_figures({**d_values, **g_values},
                                        ("d_loss", "g_loss") if undo else ("g_loss",), undo)
            with record_function("generator_backward_and_adam"):
                backward_and_step(g_loss, self.optimizer_g, self.scaler_g)
        except NonFiniteLoss:
            self.statistics.restore(list(self.model.buffers()))
            self.optimizer_d.zero_grad(set_to_none=True)
            self.optimizer_g.zero_grad(set_to_none=True)
            raise
        if self.ema:
            self.ema.update()
        return figures

    def read_figures(self, figures: dict[str, torch.Tensor], checked: tuple[str, ...],
                     undo: UndoableStep | None = None) -> dict[str, float]:
        """The step's synchronisation: the `checked` losses summed over the processes (their
        finiteness decides the step) and every figure, read as one float64 tensor. Raises
        NonFiniteLoss for the first that is not finite (D's: having taken D's step back
        with `undo`)."""
        totals = [self.ranks.sum(figures[name].detach()) for name in checked]
        read = torch.stack([t.detach().to(torch.float64)
                            for t in (*totals, *figures.values())]).tolist()
        values = dict(zip(figures, read[len(checked):]))
        for name, total in zip(checked, read[:len(checked)]):
            if math.isfinite(total):
                continue
            if name == "d_loss":
                if undo is not None:
                    undo.restore()
                raise NonFiniteLoss({"d_loss": total})
            raise generator_fault(total, values)
        return values

    def learning_rates(self) -> dict[str, float]:
        return {"lr_G": self.optimizer_g.param_groups[0]["lr"],
                "lr_D": self.optimizer_d.param_groups[0]["lr"]}

    def group_rates(self) -> list[float]:
        """G's optimiser's learning rate per parameter group (generator_groups' order)."""
        return [self.options.lr_G, self.options.lr_E][:len(self.optimizer_g.param_groups)]

    def state_dict(self) -> dict:
        """The optimisers, loss scalers and averaged generator, under a checkpoint's keys."""
        state = {"optimizer_g": self.optimizer_g.state_dict(),
                 "optimizer_d": self.optimizer_d.state_dict(),
                 "grad_scalers": {"d": self.scaler_d.state_dict(), "g": self.scaler_g.state_dict()}}
        if self.ema:
            state.update(ema=self.ema.state_dict(), ema_updates=self.ema.updates)
        if self.mouth_reader is not None:
            state["mouth_reader"] = self.mouth_reader.state_dict()
        return state

    def load_state_dict(self, checkpoint: dict) -> None:
        """Continue a checkpoint's optimisers (at the learning rates of these options: one
        given on the command line wins), its loss scalers (--precision fp16) and averaged
        generator. Call it after the model's weights are restored: a run that turns --ema
        on at resume starts its average from them."""
        for optimizer, name, rates in ((self.optimizer_g, "optimizer_g", self.group_rates()),
                                       (self.optimizer_d, "optimizer_d", [self.options.lr_D])):
            saved_groups = len(checkpoint[name]["param_groups"])
            if saved_groups != len(optimizer.param_groups):
                raise UserError(f"the checkpoint's {name} has {saved_groups} parameter "
                                f"group(s), this run's {len(optimizer.param_groups)}: --lr_E "
                                "splits the speech encoder into its own; resume with the "
                                "--lr_E the run started with")
            optimizer.load_state_dict(checkpoint[name])
            for group, lr in zip(optimizer.param_groups, rates):
                group["lr"] = lr
        for scaler, key in ((self.scaler_d, "d"), (self.scaler_g, "g")):
            saved = checkpoint.get("grad_scalers", {}).get(key)
            if saved and scaler.is_enabled():     # an fp32 or bf16 run saved an empty state
                scaler.load_state_dict(saved)
        if self.mouth_reader is not None and "mouth_reader" in checkpoint:
            self.mouth_reader.load_state_dict(checkpoint["mouth_reader"])
        if self.ema and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"], checkpoint["ema_updates"])
        elif self.ema:
            self.ema = GeneratorEma(self.model, self.options.ema_decay)
            if self.ranks.is_main:
                print("note: the checkpoint has no averaged generator; --ema starts one from "
                      "its weights")

    def critic_step(self, condition_input, real, wrong, partners) -> dict[str, float]:
        """A D step between G steps (--d_iters > 1): G draws without building a graph; D's
        loss is read (the one synchronisation) before its step."""
        with torch.no_grad(), record_function("encoder_and_generator_forward"), self.autocast():
            embedding, fake = self.model(condition_input)
        d_loss, d_values, _ = self.discriminator_losses(real, fake, wrong, embedding, partners)
        figures = self.read_figures(d_values, ("d_loss",))
        with record_function("discriminator_backward_and_adam"):
            backward_and_step(d_loss, self.optimizer_d, self.scaler_d)
        return figures

    def discriminator_losses(self, real, fake, wrong, condition, partners=None):
        """-> (D's loss, its figures, D's trunk features of the real pairs). Real pairs up,
        generated [and wrong] pairs down (the passes run as one batch; with `partners` the
        wrong pairs are the real faces under other conditions, models/wrong_pairs.py);
        a loss with a gradient penalty (wgan-gp) adds it, and --r1_coef R1."""
        faces = [real, fake, wrong] if self.wrong_pairs and partners is None else [real, fake]
        extra = () if partners is None else (partners,)
        with record_function("discriminator_forward"), self.autocast():
            seen = self.seen_by_d(torch.cat(faces))
            scores, features = self.discriminator(seen, torch.cat([condition] * len(faces)),
                                                  *extra)
            real_scores, fake_scores, *wrong_scores = scores.split(len(real))
            d_loss = self.adversarial.discriminator(real_scores, fake_scores, *wrong_scores)
            values = {"d_real": real_scores.mean(), "d_fake": fake_scores.mean()}
            if wrong_scores:
                values["d_wrong"] = wrong_scores[0].mean()
            # The penalties call the plain D: its gradients join the DDP pass's ones in the
            # same backward.
            critic = lambda x, c: self.model.projection_discriminator(x, c)[0]  # noqa: E731
            if self.adversarial.gradient_penalty:
                values["d_gp"] = gradient_penalty(critic, real, fake, condition)
                d_loss = d_loss + self.options.gp_coef * values["d_gp"]
            if self.options.r1_coef:    # at the real faces as this pass's D saw them
                values["d_r1"] = r1_penalty(critic, seen[:len(real)], condition)
                d_loss = d_loss + self.options.r1_coef / 2 * values["d_r1"]
        return d_loss, {"d_loss": d_loss, **values}, features[:len(real)].detach()

    def generator_losses(self, real, fake, embedding, logits, speaker_id, real_features):
        """-> (G's loss, its figures) for G, condition encoder and speaker classifier: the
        weighted terms of models/loss_terms.py, judged by the D of after D's step."""
        # The plain D, not its DDP wrapper: this pass gives D no weight gradients, and the
        # wrapper would wait for them in backward.
        discriminator = self.compiled.plain_discriminator
        with record_function("generator_losses_forward"), self.autocast():
            self.model.projection_discriminator.requires_grad_(False)  # no weight gradients
            g_scores, g_features = discriminator(self.seen_by_d(fake), embedding)
            self.model.projection_discriminator.requires_grad_(True)
            half = GeneratorHalf(fake, real, g_scores, g_features, real_features, logits,
                                 speaker_id, self.adversarial, self.mouth_reader)
            terms = {term.name: term.compute(half) for term in self.loss_terms}
            g_loss = sum(self.coefficients[name] * term for name, term in terms.items())
        if self.model.conditioned:
            terms["speaker_acc"] = (logits.argmax(dim=1) == speaker_id).float().mean()
        return g_loss, {"g_loss": g_loss, **terms}


def generator_groups(model: SpeechToFace, options) -> list[dict]:
    """G's optimiser's parameter groups: one at --lr_G; with --lr_E the speech encoder in a
    second at its own rate (one group otherwise, so checkpoints keep their layout)."""
    if options.lr_E is None or not hasattr(model, "speech_encoder"):
        return [{"params": list(model.generator_parameters()), "lr": options.lr_G}]
    encoder = {id(p) for p in model.speech_encoder.parameters()}
    return [{"params": [p for p in model.generator_parameters() if id(p) not in encoder],
             "lr": options.lr_G},
            {"params": list(model.speech_encoder.parameters()), "lr": options.lr_E}]


def backward_and_step(loss, optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward and Adam; a disabled scaler (fp32, bf16) passes the loss through unscaled."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
