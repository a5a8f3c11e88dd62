"""Training and rendering: turns losses into optimiser steps, and speech into face PNGs."""
from __future__ import annotations

import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import record_function
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.audio import (SAMPLE_RATE, find_audio_files, load_speech, prepare_waveform,
                        speech_windows)
from data.dataset import SpeechFaceDataset
from data.order import EpochDraws, EpochOrder, seed_worker
from data.dataset import read_faces, read_speaker_ids
from data.schema import PairFileInfo, require_embeddings, validate_pair_file
from models import ModelArgs, SpeechToFace
from models.blocks import BATCH_NORMS
from models.ema import GeneratorEma
from models.metrics import NEEDS_CLASSIFIER, parse_metric_names
from models.metrics.attributes import attribute_agreement_for, labelled_metrics
from models.metrics.identity_classifier import identity_classifier_for
from models.metrics.suite import FaceMetrics, format_table, load_inception
from models.precision import autocast, resolve_precision
from models.losses import (ADVERSARIAL_LOSSES, feature_matching_loss, gradient_penalty,
                           reconstruction_l1, speaker_softmax_loss)
from utils import (SINGLE_PROCESS, Ranks, UserError, Visualizer, face_grid, load_checkpoint,
                   prepare_output_dir, save_checkpoint, save_png, seed_everything,
                   to_uint8_images)
from utils import (check_resumable, checkpoint_name, prune_checkpoints, remove_partial_files,
                   resolve_checkpoint, restore_rng_states, rng_states, save_checkpoint_file,
                   trim_log, write_json)

SAMPLE_FACES = 16            # held-out pairs drawn in every epoch's grid
TRAIN_SAMPLE_FACES = 8      # training pairs drawn beside them
VALIDATION_PAIRS = 256       # held-out pairs scored each epoch
BATCHNORM_PAIRS = 512        # training pairs G's precise BatchNorm statistics average over


def held_out_split(info: PairFileInfo) -> str:
    for split in ("valid", "test", "train"):
        if split in info.splits:
            return split


def spread_over_speakers(speaker_ids: np.ndarray, count: int) -> list[int]:
    """Up to `count` row indices taking speakers in turn, so every speaker shows in a grid."""
    queues = [list(np.flatnonzero(speaker_ids == s)) for s in np.unique(speaker_ids)]
    rows = []
    while len(rows) < count and any(queues):
        for queue in queues:
            if queue and len(rows) < count:
                rows.append(int(queue.pop(0)))
    return rows


@dataclass
class SampleSet:
    """Fixed pairs drawn every epoch: their condition (centre-cropped speech) and real faces."""
    conditions: torch.Tensor     # (N, 1, T) speech, (N, E) stored vectors, or (N, 0)
    faces: torch.Tensor          # (N, 3, S, S)
    speakers: list[str]


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


def networks_finite(model: torch.nn.Module) -> bool:
    """Whether every weight and statistic is finite. A 2-norm over all of them is fast (8 ms
    for 18 M values, against 250 ms for isfinite) but overflows for absurd finite weights,
    so only its "no" is checked exactly."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    if torch.nn.utils.get_total_norm(tensors, 2.0).isfinite():
        return True
    return all(t.isfinite().all() for t in tensors)


# ---------------------------------------------------------------- surviving (issue 8)
# Where a run stands inside its epoch, stop signals, and the non-finite loss guard; the
# Trainer composes them, none of them trains.

@dataclass
class EpochProgress:
    """How far into the current epoch a run is, and the running sums its log line needs."""
    pairs_done: int = 0
    batches: int = 0             # batches whose steps were applied
    skipped: int = 0             # batches skipped for a non-finite loss
    totals: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)   # per figure: with --d_iters > 1 G's are rarer

    def add(self, batch_size: int, losses: dict[str, float] | None) -> None:
        self.pairs_done += batch_size
        if losses is None:
            self.skipped += 1
            return
        self.batches += 1
        for name, value in losses.items():
            self.totals[name] = self.totals.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: v / max(self.counts.get(k, self.batches), 1) for k, v in self.totals.items()}

    def state(self) -> dict:
        return asdict(self)


class StoppedBySignal(Exception):
    """SIGINT or SIGTERM arrived; the run saved `checkpoint` and stopped."""

    def __init__(self, signum: int, checkpoint: Path | None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.checkpoint = signum, checkpoint


class StopSignals:
    """While active, SIGINT and SIGTERM only ask the run to stop at the next safe point (after
    a step, or after an epoch's end); a second one stops at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():   # handlers live there only
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class NonFiniteLoss(Exception):
    """A NaN or infinite loss; the step it belongs to was not applied. `losses`: the figures."""

    def __init__(self, losses: dict[str, float]):
        super().__init__(describe_losses(losses))
        self.losses = losses


class TrainingDiverged(UserError):
    """Too many non-finite losses in a row: the run stopped, keeping its last good checkpoint."""


class NonFiniteGuard:
    """Counts batches skipped for a NaN/inf loss; `limit` in a row stops the run."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row, self.total = limit, 0, 0

    def passed(self) -> None:
        self.in_a_row = 0

    def failed(self, step: int, losses: dict[str, float], last_checkpoint: Path | None) -> None:
        self.in_a_row += 1
        self.total += 1
        if self.in_a_row >= self.limit:
            kept = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint
                    else "no checkpoint was written before it")
            raise TrainingDiverged(
                f"{self.in_a_row} steps in a row had a non-finite loss (step {step}: "
                f"{describe_losses(losses)}); stopped, {kept}; lower --lr_D / --lr_G "
                "or check the data, then --resume from it")


def describe_losses(losses: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in losses.items() if not math.isfinite(v)) or "?"


# ---------------------------------------------------------------- one training step

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

    def __init__(self, model: SpeechToFace, options, device: torch.device,
                 ranks: Ranks = SINGLE_PROCESS):
        self.model, self.options, self.device, self.ranks = model, options, device, ranks
        resolve_precision(options, device, announce=ranks.is_main)
        # foreach: one op per step over all of a network's tensors, 49 ms for G and D on this
        # CPU against 79 ms for the per-tensor loop. fused (10 ms) made a 2-process run end
        # 4% away from one process on the same global batch (test_distributed), so no.
        adam = {"betas": (0.5, 0.999), "foreach": True}
        self.optimizer_g = torch.optim.Adam(model.generator_parameters(), options.lr_G, **adam)
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
        self._choose_losses(options)

    def _choose_losses(self, options) -> None:
        self.adversarial = ADVERSARIAL_LOSSES[options.loss]
        self.d_iters = options.d_iters or self.adversarial.critic_steps
        # Without a condition there is nothing to mismatch, no true frame and no speaker:
        # the wrong-pair, L1 and softmax terms need a conditioned model.
        self.wrong_pairs = options.cls and self.model.conditioned
        self.coefficients = {"g_adv": 1.0, "g_l1": options.l1_coef, "g_fm": options.l2_coef,
                             "g_softmax": options.softmax_coef}
        self.batches_seen = 0        # the Trainer's step; restored with it on --resume

    def autocast(self):
        return autocast(self.options.precision, self.device)

    def __call__(self, batch) -> dict[str, float]:
        """The batch's figures; raises NonFiniteLoss, having applied nothing, when a loss is
        NaN or infinite in any process (D's step stands when only G's loss is)."""
        condition_input, real, speaker_id, wrong = (t.to(self.device, non_blocking=True)
                                                    for t in batch)
        real, wrong = (faces.contiguous(memory_format=torch.channels_last) for faces in (real, wrong))
        statistics = [b.detach().clone() for b in self.model.buffers()]   # BN, spectral norm
        self.batches_seen += 1
        try:
            if self.batches_seen % self.d_iters:
                return self.critic_step(condition_input, real, wrong)
            with record_function("encoder_and_generator_forward"), self.autocast():
                # once per batch; D gets it detached
                embedding, fake, logits = self.generator_side(condition_input)
            d_values, real_features = self.discriminator_step(real, fake.detach(), wrong,
                                                              embedding.detach())
            g_values = self.generator_step(real, fake, embedding, logits, speaker_id,
                                           real_features)
        except NonFiniteLoss:
            with torch.no_grad():
                for buffer, saved in zip(self.model.buffers(), statistics):
                    buffer.copy_(saved)
            self.optimizer_d.zero_grad(set_to_none=True)
            self.optimizer_g.zero_grad(set_to_none=True)
            raise
        if self.ema:
            self.ema.update()
        return {k: v.item() for k, v in {**d_values, **g_values}.items()}

    def critic_step(self, condition_input, real, wrong) -> dict[str, float]:
        """A D step between G steps (--d_iters > 1): G draws without building a graph."""
        with torch.no_grad(), record_function("encoder_and_generator_forward"), self.autocast():
            embedding, fake = self.model(condition_input)
        d_values, _ = self.discriminator_step(real, fake, wrong, embedding)
        return {k: v.item() for k, v in d_values.items()}

    def discriminator_step(self, real, fake, wrong, condition):
        """Real pairs up, generated [and wrong] pairs down (the passes run as one batch);
        wgan-gp adds the gradient penalty."""
        faces = [real, fake, wrong] if self.wrong_pairs else [real, fake]
        with record_function("discriminator_forward"), self.autocast():
            scores, features = self.discriminator(torch.cat(faces),
                                                  torch.cat([condition] * len(faces)))
            real_scores, fake_scores, *wrong_scores = scores.chunk(len(faces))
            d_loss = self.adversarial.discriminator(real_scores, fake_scores, *wrong_scores)
            values = {"d_real": real_scores.mean(), "d_fake": fake_scores.mean()}
            if wrong_scores:
                values["d_wrong"] = wrong_scores[0].mean()
            if self.adversarial.gradient_penalty:
                # The plain D: its gradients join the DDP pass's ones in the same backward.
                plain = self.model.projection_discriminator
                values["d_gp"] = gradient_penalty(lambda x, c: plain(x, c)[0], real, fake,
                                                  condition)
                d_loss = d_loss + self.options.gp_coef * values["d_gp"]
        self.check_finite({"d_loss": d_loss})
        with record_function("discriminator_backward_and_adam"):
            backward_and_step(d_loss, self.optimizer_d, self.scaler_d)
        return {"d_loss": d_loss, **values}, features[:len(real)].detach()

    def generator_step(self, real, fake, embedding, logits, speaker_id, real_features):
        """G, condition encoder and speaker classifier: adversarial + L1 + feature matching
        + softmax (an unconditional model: adversarial + feature matching)."""
        # The plain D, not its DDP wrapper: this pass gives D no weight gradients, and the
        # wrapper would wait for them in backward.
        discriminator = self.model.projection_discriminator
        with record_function("generator_losses_forward"), self.autocast():
            discriminator.requires_grad_(False)  # no weight gradients for D in G's step
            g_scores, g_features = discriminator(fake, embedding)
            discriminator.requires_grad_(True)
            terms = {"g_adv": self.adversarial.generator(g_scores),
                     "g_fm": feature_matching_loss(real_features, g_features)}
            if self.model.conditioned:
                terms.update(g_l1=reconstruction_l1(fake, real),
                             g_softmax=speaker_softmax_loss(logits, speaker_id))
            g_loss = sum(self.coefficients[name] * term for name, term in terms.items())
        self.check_finite({"g_loss": g_loss, **terms})
        with record_function("generator_backward_and_adam"):
            backward_and_step(g_loss, self.optimizer_g, self.scaler_g)
        if self.model.conditioned:
            terms["speaker_acc"] = (logits.argmax(dim=1) == speaker_id).float().mean()
        return {"g_loss": g_loss, **terms}

    def check_finite(self, figures: dict[str, torch.Tensor]) -> None:
        """Raise NonFiniteLoss when the loss (the first figure) is NaN or infinite in any
        process: they skip a batch together, or DDP's next gradient all-reduce would wait
        for the one that skipped. The loss reported is the sum over the processes."""
        (name, loss), *_ = figures.items()
        total = self.ranks.sum(loss.detach())
        if not torch.isfinite(total):
            raise NonFiniteLoss({**{k: v.item() for k, v in figures.items()}, name: total.item()})


def backward_and_step(loss, optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward and Adam; a disabled scaler (fp32, bf16) passes the loss through unscaled."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


# ---------------------------------------------------------------- the training loop

class Trainer:
    def __init__(self, options, device: torch.device, dataset_path: Path,
                 resume: dict | None = None, ranks: Ranks = SINGLE_PROCESS):
        """`resume`: a checkpoint to continue exactly (runtime.py loads it for --resume);
        `ranks`: this process's place among torchrun's (one process by default)."""
        self.options, self.device, self.ranks = options, device, ranks
        self.info = validate_pair_file(dataset_path)
        self.speaker_names, self.speaker_map = self.info.speaker_names, None
        self.base = self._finetune_base()
        self.args = self._model_args()
        self.run_dir = Path("checkpoints") / options.save_path
        if ranks.is_main:                  # the other processes never write
            prepare_output_dir(self.run_dir)
        self.loader_generator = seed_everything(options.seed + ranks.rank)
        if resume is not None:
            check_resume_architecture(self.args, resume, options.resume)
        self.train_loader = self._train_loader()       # a batch that cannot fit fails first
        self.batchnorm_conditions, self._batchnorm_step = self._batchnorm_conditions(), None
        # channels_last: 10-20% faster 2-D convolutions on CPU (benchmarks/README.md).
        self.model = SpeechToFace(self.args).to(device, memory_format=torch.channels_last)
        self._load_pretrained()
        if options.batchnorm == "sync":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.gan_step = GanStep(self.model, options, device, ranks)
        self.optimizer_g, self.optimizer_d = self.gan_step.optimizer_g, self.gan_step.optimizer_d
        self.visualizer, self.evaluation, self.best_score = None, None, None
        if ranks.is_main:
            self._prepare_reports()
        self.epoch, self.step = 0, 0
        self._init_run_state(resume)

    def _prepare_reports(self) -> None:
        """What only the main process needs: the held-out pairs it scores, the fixed pairs it
        draws, the run folder's visualiser and the --eval_every metrics."""
        self.held_out = self._held_out_dataset()
        self.held_out_samples = self._sample_set(held_out_split(self.info), SAMPLE_FACES)
        self.train_samples = self._sample_set("train", TRAIN_SAMPLE_FACES)
        self.visualizer = Visualizer(self.run_dir, self.options)
        self.evaluation = self._training_evaluation()

    @property
    def ema(self) -> GeneratorEma | None:
        return self.gan_step.ema

    @property
    def rendering_model(self) -> SpeechToFace:
        """What held-out scores, sample grids and evaluation draw with: the averaged
        generator under --ema."""
        return self.ema.average if self.ema else self.model

    def _model_args(self) -> ModelArgs:
        o = self.options
        if self.base:
            args = finetune_args(self.base, o, len(self.speaker_names))
        else:
            stored_width = self.info.embedding_dim if o.condition == "embedding" else 0
            args = ModelArgs(image_size=o.image_size, audio_samples=round(o.audio_seconds * 16000),
                             num_speakers=len(self.speaker_names), noise_dim=o.noise_dim,
                             condition=o.condition, condition_dim=stored_width,
                             generator=o.generator, discriminator=o.discriminator,
                             speech_encoder=o.speech_encoder)
        if args.condition == "embedding":
            require_embeddings(self.info, args.condition_dim or None)
        return args

    def _finetune_base(self) -> dict | None:
        """With --finetune: the trained checkpoint. Its speakers keep their indices and the
        file's new speakers follow; training stops after --finetune_steps batches."""
        o = self.options
        if not o.finetune:
            return None
        base = load_checkpoint(o.finetune)
        self.speaker_names, self.speaker_map = extended_speakers(base["speaker_names"],
                                                                 self.info.speaker_names)
        new = self.speaker_names[len(base["speaker_names"]):]
        o.max_steps = min(o.max_steps or o.finetune_steps, o.finetune_steps)
        print(f"fine-tuning {o.finetune} for {o.max_steps} steps: {len(base['speaker_names'])} "
              f"trained speakers + {len(new)} new ({', '.join(new) or 'none'}); the "
              "architecture is the checkpoint's")
        return base

    def _load_pretrained(self) -> None:
        if self.base:
            start_from_trained(self.model, self.base, self.options.finetune)
        if self.options.pre_trained_gen:
            checkpoint = load_checkpoint(self.options.pre_trained_gen)
            load_networks(self.model, checkpoint, self.model.generator_part_names(),
                          self.options.pre_trained_gen)
        if self.options.pre_trained_disc:
            checkpoint = load_checkpoint(self.options.pre_trained_disc)
            load_networks(self.model, checkpoint, ("projection_discriminator",),
                          self.options.pre_trained_disc)

    def _dataset(self, split: str, train: bool, in_memory: bool | None = None
                 ) -> SpeechFaceDataset:
        return SpeechFaceDataset(self.info, split, self.args.audio_samples,
                                 self.args.image_size, train=train, in_memory=in_memory,
                                 condition=self.args.condition, speaker_map=self.speaker_map)

    def _train_loader(self) -> DataLoader:
        dataset = self._dataset("train", train=True)
        seed, (rank, processes) = self.options.seed, (self.ranks.rank, self.ranks.world_size)
        if self.base:
            # A handful of pairs: every fine-tuning step in one epoch of draws with
            # replacement, so the held-out scores and the checkpoint come once, at the end.
            draws = self.options.max_steps * self.options.batch_size * processes
            self.order = EpochDraws(len(dataset), seed, draws, rank, processes)
        elif self.options.batch_size > len(dataset) // processes:
            share = (f", {len(dataset) // processes} for each of {processes} processes"
                     if processes > 1 else "")
            raise UserError(f"--batch_size {self.options.batch_size} is larger than the train "
                            f"split ({len(dataset)} pairs{share}); lower --batch_size")
        else:
            # resumable shuffling; this process's share of it under torchrun
            self.order = EpochOrder(len(dataset), seed, rank, processes)
        workers = self.options.num_workers
        return DataLoader(dataset, batch_size=self.options.batch_size, sampler=self.order,
                          drop_last=True, num_workers=workers,
                          persistent_workers=workers > 0, generator=self.loader_generator,
                          worker_init_fn=seed_worker, pin_memory=self.device.type == "cuda")

    def _held_out_dataset(self) -> SpeechFaceDataset:
        return self._dataset(held_out_split(self.info), train=False)

    def _sample_set(self, split: str, count: int) -> SampleSet:
        """`count` pairs of the split, speakers in turn, read once. The dataset (and its HDF5
        handle) is dropped here, so no handle crosses the fork of the DataLoader's workers."""
        dataset = self._dataset(split, train=False, in_memory=False)
        rows = spread_over_speakers(dataset.speaker_ids, count)
        return SampleSet(torch.stack([dataset.condition(i) for i in rows]),
                         torch.stack([dataset.face(i) for i in rows]),
                         [self.speaker_names[dataset.speaker_ids[i]] for i in rows])

    def _batchnorm_conditions(self) -> torch.Tensor:
        """Fixed training pairs, cropped as training crops them (from a generator of their
        own, so no training draw moves), that set G's BatchNorm statistics."""
        dataset = self._dataset("train", train=True, in_memory=False)
        crops = torch.Generator().manual_seed(self.options.seed)
        rows = spread_over_speakers(dataset.speaker_ids, BATCHNORM_PAIRS)
        return torch.stack([dataset.condition(i, crops) for i in rows])

    def refresh_batchnorm(self) -> None:
        """Precise BatchNorm statistics before faces are drawn in eval mode or saved; once a
        step. They are recomputed from scratch, so they depend on the weights alone and a
        resumed run saves the same ones. --batchnorm frozen trains on the stored statistics,
        so they stay."""
        if (self._batchnorm_step == self.step or len(self.batchnorm_conditions) < 2
                or self.options.batchnorm == "frozen"):
            return
        chunks = self.batchnorm_conditions.tensor_split(-(-len(self.batchnorm_conditions) // 64))
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):     # G's noise must not move the RNG
            for model in [self.model] + ([self.ema.average] if self.ema else []):
                model.refresh_batchnorm(chunk.to(self.device) for chunk in chunks)
        self._batchnorm_step = self.step

    def train_epoch(self) -> dict[str, float]:
        """The rest of the current epoch (all of it, unless the run resumed inside it)."""
        self._train_mode()
        batch_size = self.options.batch_size * self.ranks.world_size    # the global batch
        usable_pairs = self.order.share // self.options.batch_size * batch_size
        self.order.start(self.epoch, self.progress.pairs_done)
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.options.epochs}",
                   initial=self.progress.pairs_done // batch_size, total=usable_pairs // batch_size,
                   leave=False, dynamic_ncols=True, disable=None if self.ranks.is_main else True)
        for batch in bar:
            self.progress.add(batch_size, self.train_batch(batch))
            if self.progress.batches:
                means = self.progress.means()   # with --d_iters > 1, G's only every N batches
                shown = (("d", "d_loss"), ("g", "g_loss"), ("l1", "g_l1"))
                bar.set_postfix({short: f"{means[name]:.3f}" for short, name in shown
                                 if name in means})
            stop = self.stop_requested()
            if stop:
                raise StoppedBySignal(stop, self.save())
            self._checkpoint_inside_epoch(usable_pairs)
            if self.options.max_steps and self.step >= self.options.max_steps:
                break
        return self.progress.means()

    def train_batch(self, batch) -> dict[str, float] | None:
        """One step; None when a non-finite loss made it a skipped one. The figures are the
        global batch's: every process's, averaged."""
        try:
            losses = self.ranks.mean(self.gan_step(batch))
        except NonFiniteLoss as fault:
            self.step += 1
            self._skipped(fault.losses)
            return None
        self.step += 1
        self.guard.passed()
        if self.visualizer:
            self.visualizer.scalars(self.step, {**losses, **self.learning_rates()},
                                    epoch=self.epoch + 1)
        return losses

    def _train_mode(self) -> None:
        """Training mode; --batchnorm frozen keeps BatchNorm on its stored statistics (and
        stops updating them). Each epoch starts here, so drawing faces in eval mode at the
        end of the last one leaves nothing behind."""
        self.model.train()
        if self.options.batchnorm == "frozen":
            for module in self.model.modules():
                if isinstance(module, BATCH_NORMS):
                    module.eval()

    def stop_requested(self) -> int:
        """The signal that asked the run to stop, agreed by every process (0: none): they all
        stop after the same step, or the others would wait for the one that stopped."""
        return self.ranks.max(self.signals.received or 0)

    @torch.no_grad()
    def held_out_scores(self) -> dict[str, float]:
        """L1 to the true frame, and how often a generated face is nearest its own speaker's
        mean real face (a cheap identity check until a face classifier scores it)."""
        if not self.model.conditioned:
            return {}    # random faces have no true frame and no speaker to be scored against
        self.model.eval()
        rows = spread_over_speakers(self.held_out.speaker_ids, VALIDATION_PAIRS)
        l1, hits = 0.0, 0
        mean_faces = self._mean_faces()
        for start in range(0, len(rows), 64):
            chunk = rows[start:start + 64]
            condition = torch.stack([self.held_out.condition(i) for i in chunk]).to(self.device)
            real = torch.stack([self.held_out.face(i) for i in chunk]).to(self.device)
            _, fake = self.rendering_model(condition)
            l1 += (fake - real).abs().mean(dim=(1, 2, 3)).sum().item()
            nearest = torch.cdist(fake.flatten(1), mean_faces.flatten(1)).argmin(dim=1).cpu()
            hits += (nearest.numpy() == self.held_out.speaker_ids[chunk]).sum()
        self._train_mode()
        return {"val_l1": l1 / len(rows), "val_nearest_speaker_acc": hits / len(rows)}

    def _mean_faces(self) -> torch.Tensor:
        """Mean real held-out face per speaker index (zeros for speakers not in the split)."""
        size = self.args.image_size
        means = torch.zeros(self.args.num_speakers, 3, size, size)
        for speaker in np.unique(self.held_out.speaker_ids):
            rows = np.flatnonzero(self.held_out.speaker_ids == speaker)[:32]
            means[speaker] = torch.stack([self.held_out.face(i) for i in rows]).mean(0)
        return means.to(self.device)

    def learning_rates(self) -> dict[str, float]:
        return {"lr_G": self.optimizer_g.param_groups[0]["lr"],
                "lr_D": self.optimizer_d.param_groups[0]["lr"]}

    @torch.no_grad()
    def sample_grid(self, samples: SampleSet) -> np.ndarray:
        """Generated faces (top row of each pair of rows) above the true frames."""
        self.model.eval()
        real = samples.faces
        _, fake = self.rendering_model(samples.conditions.to(self.device))
        self._train_mode()
        rows = []
        for start in range(0, len(real), 8):
            rows += [fake[start:start + 8].cpu(), real[start:start + 8]]
        if len(rows) > 2 and len(rows[-1]) != len(rows[0]):
            rows = rows[:-2]
        return face_grid(rows)

    def save_sample_grids(self) -> Path:
        """This epoch's faces for the held-out and the training samples; returns the first."""
        grid = self.visualizer.faces(
            "held-out speech: generated faces above the real ones",
            self.sample_grid(self.held_out_samples), f"epoch_{self.epoch:04d}.png", self.epoch)
        self.visualizer.faces(
            "training pairs: generated faces above the real ones",
            self.sample_grid(self.train_samples), f"train_epoch_{self.epoch:04d}.png", self.epoch)
        return grid

    def show_sample_speech(self) -> None:
        """The speech behind the first grid row of each sample set, as the encoder hears it
        (pre-emphasised, peak-normalised); it is the same every epoch, so it is sent once."""
        if self.args.condition != "speech":
            return
        for title, samples in (("held-out speech", self.held_out_samples),
                               ("training speech", self.train_samples)):
            first_row = zip(samples.speakers[:8], samples.conditions)
            clips = [(f"{column + 1}: {speaker}", waveform[0].numpy())
                     for column, (speaker, waveform) in enumerate(first_row)]
            self.visualizer.speech(f"{title}, in grid order", clips, SAMPLE_RATE)

    def checkpoint_payload(self, other_ranks_rng: list | None = None) -> dict:
        """Everything a checkpoint holds; the networks unwrapped (no DDP `module.` keys), so a
        checkpoint of N processes loads in one and the other way round."""
        payload = {"model_args": asdict(self.args), "networks": self.model.state_dict(),
                   "optimizer_g": self.optimizer_g.state_dict(),
                   "optimizer_d": self.optimizer_d.state_dict(),
                   "grad_scalers": {"d": self.gan_step.scaler_d.state_dict(),
                                    "g": self.gan_step.scaler_g.state_dict()},
                   "epoch": self.epoch, "step": self.step, "options": vars(self.options),
                   "speaker_names": self.speaker_names, "world_size": self.ranks.world_size,
                   "resume_state": self.resume_state(other_ranks_rng)}
        if self.ema:
            payload.update(ema=self.ema.state_dict(), ema_updates=self.ema.updates)
        return payload

    # ---- surviving: exact resume, checkpoints on a schedule, non-finite losses (issue 8)

    def _init_run_state(self, resume: dict | None) -> None:
        self.progress = EpochProgress()
        self.guard = NonFiniteGuard(self.options.max_nonfinite_steps)
        self.signals = StopSignals()
        self.last_checkpoint: Path | None = None
        self._saved_at, self._save_at_epoch_end = None, False
        if self.ranks.is_main:
            for partial in remove_partial_files(self.run_dir):
                print(f"note: removed {partial}, a checkpoint cut off mid-write")
        if resume is not None:
            self.restore(resume)

    def resume_state(self, other_ranks_rng: list | None = None) -> dict:
        """What an exact continuation needs besides weights and optimisers; under torchrun
        the other processes' random generators too (they were seeded with seed + rank)."""
        state = {"epoch_progress": self.progress.state(), "rng": rng_states(),
                 "nonfinite_in_a_row": self.guard.in_a_row}
        if other_ranks_rng:
            state["rng_other_ranks"] = other_ranks_rng
        return state

    def restore(self, checkpoint: dict) -> None:
        """Continue where `checkpoint` stopped: networks, both optimisers (and loss scalers),
        the averaged generator, the place in the data (epoch, pairs done), the loss sums of
        the epoch so far, every random generator."""
        source = self.options.resume
        state = check_resumable(checkpoint, source)
        self.model.load_state_dict(checkpoint["networks"])
        for optimizer, name, lr in ((self.optimizer_g, "optimizer_g", self.options.lr_G),
                                    (self.optimizer_d, "optimizer_d", self.options.lr_D)):
            optimizer.load_state_dict(checkpoint[name])
            for group in optimizer.param_groups:
                group["lr"] = lr             # a learning rate given on the command line wins
        self._restore_scalers_and_ema(checkpoint)
        self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
        self.gan_step.batches_seen = self.step          # --d_iters: G's turn comes on time
        self.progress = EpochProgress(**state["epoch_progress"])
        self.guard.in_a_row = state["nonfinite_in_a_row"]
        self.last_checkpoint = Path(source)
        self._check_place_in_epoch(checkpoint)
        if self.ranks.is_main:
            if checkpoint["speaker_names"] != self.speaker_names:
                print(f"note: {self.info.path} names other speakers than the checkpoint's run")
            trim_log(self.run_dir / "log.jsonl", self.step, self.epoch)  # what it logs again
            print(f"resuming {source} at epoch {self.epoch + 1}, step {self.step}, "
                  f"{self.progress.pairs_done} pairs into the epoch")
        self._restore_rng(state)   # last: building the networks drew from them

    def _restore_scalers_and_ema(self, checkpoint: dict) -> None:
        """The loss scalers (--precision fp16) and the averaged generator (--ema); a run that
        turns --ema on at resume starts its average from the restored weights."""
        for scaler, key in ((self.gan_step.scaler_d, "d"), (self.gan_step.scaler_g, "g")):
            saved = checkpoint.get("grad_scalers", {}).get(key)
            if saved and scaler.is_enabled():     # an fp32 or bf16 run saved an empty state
                scaler.load_state_dict(saved)
        if self.ema and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"], checkpoint["ema_updates"])
        elif self.ema:
            self.gan_step.ema = GeneratorEma(self.model, self.options.ema_decay)
            if self.ranks.is_main:
                print("note: the checkpoint has no averaged generator; --ema starts one from "
                      "its weights")

    def _check_place_in_epoch(self, checkpoint: dict) -> None:
        """Each process resumes at pairs_done / N of its share: N must divide it."""
        pairs_done, processes = self.progress.pairs_done, self.ranks.world_size
        if pairs_done % processes:
            raise UserError(f"{self.options.resume}: it stopped {pairs_done} pairs into an epoch, "
                            f"which {processes} processes cannot share out evenly; resume it "
                            f"with {checkpoint.get('world_size', 1)} processes, or from a "
                            "checkpoint at an epoch's end")

    def _restore_rng(self, state: dict) -> None:
        """Rank 0 (or the one process) takes the saved generators; rank r of a run saved
        with as many processes takes its own, else it keeps its fresh seed + rank."""
        rank, others = self.ranks.rank, state.get("rng_other_ranks", [])
        if rank == 0:
            restore_rng_states(state["rng"])
            if len(others) + 1 < self.ranks.world_size:
                print(f"note: the checkpoint holds the random generators of {len(others) + 1} "
                      "processes; the others start from --seed + rank, so their noise differs")
        elif rank <= len(others):
            restore_rng_states(others[rank - 1])

    def save(self) -> Path | None:
        """Checkpoint where the run stands (every process calls it at the same step; rank 0
        writes). Weights that are no longer finite are not saved, so the newest checkpoint
        stays the last good one."""
        if not networks_finite(self.model):             # the same weights in every process
            if self.ranks.is_main:
                tqdm.write("note: the networks hold non-finite values; no checkpoint written, "
                           f"the last good one is {self.last_checkpoint}")
            return self.last_checkpoint
        self.refresh_batchnorm()
        other_ranks_rng = self.ranks.gather(rng_states())[1:]
        name = checkpoint_name(self.epoch, self.step, mid_epoch=self.progress.pairs_done > 0)
        if self.ranks.is_main:
            save_checkpoint(self.run_dir, self.checkpoint_payload(other_ranks_rng), name)
            prune_checkpoints(self.run_dir, self.options.keep_checkpoints)
        self.ranks.barrier()           # nobody moves on, or exits, while rank 0 writes
        self.last_checkpoint = self.run_dir / name
        self._saved_at, self._save_at_epoch_end = (self.epoch, self.step), False
        return self.last_checkpoint

    def _save_if_healthy(self) -> None:
        """Scheduled checkpoints wait while the last batch was skipped: the newest checkpoint
        should follow an applied step, not a state every step may now fail from."""
        if self.guard.in_a_row:
            if self.ranks.is_main:
                tqdm.write(f"note: checkpoint at step {self.step} put off to the epoch's end, "
                           "its batch was skipped")
            self._save_at_epoch_end = True
            return
        self.save()

    def _save_unless_saved(self) -> Path | None:
        return self.last_checkpoint if self._saved_at == (self.epoch, self.step) else self.save()

    def _checkpoint_inside_epoch(self, usable_pairs: int) -> None:
        """--checkpoint_every_steps: a step that ends an epoch saves after the epoch's end."""
        every = self.options.checkpoint_every_steps
        if every and self.step % every == 0:
            if self.progress.pairs_done < usable_pairs:
                self._save_if_healthy()
            else:
                self._save_at_epoch_end = True

    def _skipped(self, losses: dict[str, float]) -> None:
        """A batch GanStep skipped for a non-finite loss (in every process together):
        counted, logged, and --max_nonfinite_steps in a row stop the run."""
        if self.visualizer:
            self.visualizer.log.write(kind="skipped_step", step=self.step, epoch=self.epoch + 1,
                                      **{k: v if math.isfinite(v) else str(v)
                                         for k, v in losses.items()})
            tqdm.write(f"note: step {self.step} skipped, non-finite loss "
                       f"({describe_losses(losses)})")
        self.guard.failed(self.step, losses, self.last_checkpoint)

    def train(self) -> Path | None:
        """Train to --epochs; returns the last checkpoint. SIGINT/SIGTERM save and raise
        StoppedBySignal; too many non-finite losses in a row raise TrainingDiverged."""
        if self.ranks.is_main:
            print(f"training on {self.device}{self._processes_note()}: "
                  f"{len(self.train_loader.dataset)} train pairs, "
                  f"{len(self.speaker_names)} speakers, run folder {self.run_dir}")
            self.show_sample_speech()
            if self.epoch >= self.options.epochs:
                print(f"note: the run already did its {self.options.epochs} epochs; pass a "
                      "larger --epochs to train on")
        with StopSignals() as self.signals:
            while self.epoch < self.options.epochs:
                self.end_epoch(self.train_epoch())
                if self._finished():
                    break
                stop = self.stop_requested()
                if stop:
                    raise StoppedBySignal(stop, self._save_unless_saved())
        return self.last_checkpoint

    def _processes_note(self) -> str:
        processes = self.ranks.world_size
        if processes == 1:
            return ""
        return (f" x {processes} processes (global batch {processes} x "
                f"{self.options.batch_size})")

    def end_epoch(self, losses: dict[str, float]) -> None:
        skipped = self.progress.skipped
        self.epoch += 1
        self.progress = EpochProgress()
        self.refresh_batchnorm()         # every process: SyncBatchNorm's statistics are shared
        if self.ranks.is_main:
            self.report_epoch(losses, skipped)
        if self._finished():
            self.save()                  # the run's result, even right after a skipped batch
        elif self.epoch % self.options.checkpoint_every == 0 or self._save_at_epoch_end:
            self._save_if_healthy()

    def report_epoch(self, losses: dict[str, float], skipped: int) -> None:
        """Score, draw and log the epoch just ended: the main process's work."""
        scores = {**self.held_out_scores(), **self.evaluate_if_due()}
        self.visualizer.metrics(self.step, scores, epoch=self.epoch)
        grid = self.save_sample_grids()
        self.visualizer.epoch_end(self.epoch, self.step, {**losses, "skipped_steps": skipped})
        print(f"epoch {self.epoch}: " + "  ".join(f"{k} {v:.4f}" for k, v in
                                                  {**losses, **scores}.items())
              + f"  grid {grid}" + (f"  ({skipped} steps skipped)" if skipped else ""))

    def _finished(self) -> bool:
        steps_done = self.options.max_steps and self.step >= self.options.max_steps
        return bool(steps_done) or self.epoch >= self.options.epochs

    # ---- --eval_every: the evaluate metrics on the held-out split, and best.pt (issue 4)

    def _training_evaluation(self) -> SplitEvaluation | None:
        if not self.options.eval_every:
            return None
        split = held_out_split(self.info)
        evaluation = evaluation_for(self.options, self.info, split, self.args, self.device,
                                    self.options.eval_samples or EVAL_SAMPLES)
        key = best_metric(evaluation.suite.names)
        print(f"evaluating every {self.options.eval_every} epochs on {len(evaluation.rows)} "
              f"'{split}' pairs; " + (f"best.pt keeps the best {key}" if key else
                                      "no identity metric chosen, so no best.pt"))
        return evaluation

    def evaluate_if_due(self) -> dict[str, float]:
        """The metrics as `eval_<name>` log entries, on the epochs --eval_every names."""
        if self.evaluation is None or self.epoch % self.options.eval_every:
            return {}
        metrics = self.evaluation.run(self.rendering_model)
        print(f"evaluation after epoch {self.epoch}:\n{format_table(metrics)}")
        self._keep_best(metrics)
        return {f"eval_{key}": value for key, value in metrics.items()}

    def _keep_best(self, metrics: dict[str, float]) -> None:
        """Write best.pt (atomically, beside latest.pt) when the identity score improves."""
        key = best_metric(self.evaluation.suite.names)
        if key is None or (self.best_score is not None and metrics[key] <= self.best_score):
            return
        self.best_score = metrics[key]
        save_checkpoint_file(self.run_dir / "best.pt", {
            **self.checkpoint_payload(), "best": {"metric": key, "value": metrics[key]}})


# ---------------------------------------------------------------- fine-tuning (--finetune)

def extended_speakers(trained: list[str], in_file: list[str]) -> tuple[list[str], np.ndarray]:
    """The trained speakers, then the file's speakers they lack; and, for each of the
    file's speaker indices, its index in that list."""
    names = list(trained) + [name for name in in_file if name not in trained]
    return names, np.array([names.index(name) for name in in_file], dtype=np.int64)


def finetune_args(checkpoint: dict, options, num_speakers: int) -> ModelArgs:
    """The trained architecture with room for more speakers. The options follow it, so the
    run's options.json says what was really trained."""
    args = replace(ModelArgs(**checkpoint["model_args"]), num_speakers=num_speakers)
    options.image_size, options.audio_seconds = args.image_size, args.audio_samples / 16000
    options.noise_dim, options.condition = args.noise_dim, args.condition
    options.generator, options.discriminator = args.generator, args.discriminator
    options.speech_encoder = args.speech_encoder
    return args


def start_from_trained(model: SpeechToFace, checkpoint: dict, source) -> None:
    """Every network of a trained checkpoint; the speaker classifier keeps its trained rows
    first and gets fresh rows for the added speakers."""
    parts = [part for part in model.generator_part_names() if part != "speaker_classifier"]
    load_networks(model, checkpoint, (*parts, "projection_discriminator"), source)
    if model.conditioned:
        model.speaker_classifier.load_extended(network_state(checkpoint, "speaker_classifier"))


# ---------------------------------------------------------------- inference

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


@torch.no_grad()
def render_test_split(model: SpeechToFace, info: PairFileInfo, out_dir: Path, device,
                      split: str = "test") -> int:
    """One PNG per pair of the split: the generated face beside the real frame."""
    dataset = SpeechFaceDataset(info, split, model.args.audio_samples, model.args.image_size,
                                train=False, condition=model.args.condition)
    names = info.speaker_names
    for start in tqdm(range(0, len(dataset), 64), desc="rendering", leave=False, disable=None):
        rows = range(start, min(start + 64, len(dataset)))
        condition = torch.stack([dataset.condition(i) for i in rows]).to(device)
        real = torch.stack([dataset.face(i) for i in rows])
        _, fake = model(condition)
        for i, row in enumerate(rows):
            pair = face_grid([torch.stack([fake[i].cpu(), real[i]])])
            save_png(out_dir / f"{names[dataset.speaker_ids[row]]}_{row:05d}.png", pair)
    return len(dataset)


@torch.no_grad()
def render_audio_files(model: SpeechToFace, paths, out_dir: Path, device) -> int:
    """One face PNG per window of each of the user's audio files."""
    samples, written = model.args.audio_samples, 0
    for path in find_audio_files(paths):
        windows = speech_windows(load_speech(path), samples, source=str(path))
        waveform = torch.from_numpy(np.stack([prepare_waveform(w) for w in windows]))[:, None]
        _, faces = model(waveform.to(device))
        for index, face in enumerate(to_uint8_images(faces)):
            save_png(out_dir / f"{path.stem}_{index:03d}.png", face)
            written += 1
    return written


@torch.no_grad()
def render_random_faces(model: SpeechToFace, count: int, out_dir: Path, device) -> int:
    """An unconditional model's faces: `count` PNGs, each from fresh noise."""
    for start in range(0, count, 64):
        _, faces = model(torch.zeros(min(64, count - start), 0, device=device))
        for index, face in enumerate(to_uint8_images(faces), start):
            save_png(out_dir / f"face_{index:04d}.png", face)
    return count


def run_inference(options, device: torch.device, dataset_path: Path | None) -> Path:
    source = options.pre_trained_gen or Path("checkpoints") / options.save_path
    model, checkpoint = generator_from_checkpoint(source, device)
    condition = model.args.condition
    if options.audio and condition != "speech":
        drawn_from = "noise" if condition == "none" else "the vectors stored in a pair file"
        raise UserError(f"{source} draws faces from {drawn_from}, not speech; drop --audio")
    out_dir = prepare_output_dir(Path("results") / options.save_path)
    if condition == "none":
        seed_everything(options.seed)
        count = render_random_faces(model, options.num_faces, out_dir, device)
    elif options.audio:
        count = render_audio_files(model, options.audio, out_dir, device)
    else:
        info = validate_pair_file(dataset_path)
        if condition == "embedding":
            require_embeddings(info, model.args.condition_dim)
        if info.speaker_names != checkpoint["speaker_names"]:
            print(f"note: {info.path} names other speakers than the checkpoint was trained on")
        split = "test" if "test" in info.splits else held_out_split(info)
        count = render_test_split(model, info, out_dir, device, split)
    print(f"wrote {count} face images to {out_dir}")
    return out_dir


def clip_workers(requested: int) -> int:
    cores = os.cpu_count() or 1
    if requested > cores:
        print(f"note: --num_workers {requested} is more than this machine's {cores} cores; "
              f"using {cores}")
        return cores
    return requested


# ---------------------------------------------------------------- evaluation (issue 4)

EVAL_SAMPLES = 256           # held-out pairs --eval_every scores unless --eval_samples says


def best_metric(names: list[str]) -> str | None:
    """What best.pt is chosen by: identity accuracy, or 1:2 matching for unseen speakers."""
    if "identity" in names:
        return "identity_top1"
    return "matching_1v2" if "matching" in names else None


class SplitEvaluation:
    """Scores a generator on fixed rows of one split; the real faces are analysed once."""

    def __init__(self, suite: FaceMetrics, dataset: SpeechFaceDataset, rows: list[int], device,
                 unseen: bool):
        self.suite, self.dataset, self.rows, self.device = suite, dataset, rows, device
        self.mode = "unseen_speakers" if unseen else "seen_speakers"
        self.speaker_ids = dataset.speaker_ids[rows]
        real = [to_uint8_images(torch.stack([dataset.face(i) for i in rows[s:s + 64]]))
                for s in range(0, len(rows), 64)]
        self.real = suite.analyse(np.concatenate(real))
        if "mouth_sync" in suite.names and dataset.condition_kind == "speech":
            self.real.loudness = np.array([dataset.centre_loudness(i) for i in rows])

    @torch.no_grad()
    def generate(self, model: SpeechToFace) -> np.ndarray:
        """uint8 faces (N, S, S, 3), one per row, in eval mode."""
        was_training = model.training
        model.eval()
        faces = []
        for start in range(0, len(self.rows), 64):
            chunk = self.rows[start:start + 64]
            condition = torch.stack([self.dataset.condition(i) for i in chunk]).to(self.device)
            faces.append(to_uint8_images(model(condition)[1]))
        model.train(was_training)
        return np.concatenate(faces)

    def run(self, model: SpeechToFace) -> dict[str, float]:
        fake = self.suite.analyse(self.generate(model))
        return self.suite.score(fake, self.real, self.speaker_ids)


def unseen_speakers(info: PairFileInfo, split: str) -> bool:
    """True where the split holds a speaker with no train pairs (a speaker-disjoint split)."""
    heard = set(read_speaker_ids(info, "train").tolist())
    return not set(read_speaker_ids(info, split).tolist()) <= heard


def metric_suite(names: list[str], info: PairFileInfo, device, inception_path, split=None,
                 rows=None) -> FaceMetrics:
    """The named metrics, with the identity classifier of this file where one is needed
    (and the attribute labels of `rows` of `split`, for the attributes metric)."""
    inception = inception_network(inception_path, device) if inception_path else None
    classifier = None
    if NEEDS_CLASSIFIER & set(names):
        classifier = identity_classifier_for(info.path, lambda: read_faces(info, "train"),
                                             len(info.speaker_names), device)
    demo = all(name.startswith("demo_") for name in info.speaker_names)   # data/demo.py's
    attributes = attribute_agreement_for(info, split, rows, device) if "attributes" in names else None
    return FaceMetrics(names, device, classifier, inception, "demo" if demo else "landmarks",
                       attributes)


def inception_network(path, device):
    try:
        return load_inception(path, device)
    except (RuntimeError, ValueError) as error:
        raise UserError(f"--inception {path}: not a TorchScript model "
                        f"({str(error).splitlines()[0][:100]})") from None


def unconditional_metrics(names: list[str], args: ModelArgs) -> list[str]:
    """An unconditional model's faces belong to no speaker and pair with no frame: of the
    metrics, only face detection and Frechet distances apply."""
    if args.condition != "none":
        return names
    kept = [name for name in names if name.startswith("detection") or name == "frechet"]
    if not kept:
        raise UserError("an unconditional model (--condition none) has no speaker or true "
                        "frame to be scored against; choose --metrics detection_dlib, "
                        "detection_haar or frechet")
    if len(kept) < len(names):
        print(f"note: an unconditional model is scored on {', '.join(kept)} only")
    return kept


def evaluation_for(options, info: PairFileInfo, split: str, args: ModelArgs, device,
                   limit: int | None) -> SplitEvaluation:
    """Rows of `split` (all, or `limit` spread over the speakers) ready to score."""
    dataset = SpeechFaceDataset(info, split, args.audio_samples, args.image_size, train=False,
                                condition=args.condition)
    rows = spread_over_speakers(dataset.speaker_ids, limit or len(dataset))
    names = unconditional_metrics(parse_metric_names(options.metrics), args)
    names = labelled_metrics(names, info, options.metrics)
    if "matching" in names and len(np.unique(dataset.speaker_ids[rows])) < 2:
        raise UserError(f"split '{split}' of {info.path} holds one speaker; 1:2 matching "
                        "compares speakers, so evaluate a split with two or more")
    unseen = unseen_speakers(info, split)
    if unseen and "identity" in names:
        names.remove("identity")
        print(f"note: split '{split}' holds speakers the train split lacks; identity accuracy "
              "is undefined for them, so 1:2 matching and recall@K score identity instead")
    suite = metric_suite(names, info, device, options.inception, split, rows)
    return SplitEvaluation(suite, dataset, rows, device, unseen)


def run_evaluation(options, device: torch.device, dataset_path: Path) -> dict:
    """--evaluate: score a checkpoint's faces for a split, print a table, write metrics.json."""
    source = resolve_checkpoint(options.pre_trained_gen or Path("checkpoints") / options.save_path)
    model, checkpoint = generator_from_checkpoint(source, device)
    info = validate_pair_file(dataset_path)
    if options.split not in info.splits:
        raise UserError(f"{info.path} has no '{options.split}' split (it has "
                        f"{', '.join(info.splits)}); choose one with --split")
    started = time.perf_counter()
    evaluation = evaluation_for(options, info, options.split, model.args, device,
                                options.eval_samples)
    prepared = time.perf_counter()
    metrics = evaluation.run(model)
    report = {"checkpoint": str(source), "dataset": str(info.path), "split": options.split,
              "pairs": len(evaluation.rows), "speakers": int(len(np.unique(evaluation.speaker_ids))),
              "mode": evaluation.mode,
              "epoch": checkpoint.get("epoch"), "step": checkpoint.get("step"),
              "detectors": evaluation.suite.detectors(), "metrics": metrics,
              "seconds": {"real_faces": round(prepared - started, 2),
                          "generated_faces": round(time.perf_counter() - prepared, 2)}}
    print(f"{source} on split '{options.split}' of {info.path} ({report['pairs']} pairs, "
          f"{report['speakers']} speakers, {report['mode'].replace('_', ' ')}):")
    print(format_table(metrics))
    write_json(source.parent / "metrics.json", report)
    print(f"wrote {source.parent / 'metrics.json'}")
    return report
