"""Training and rendering: turns losses into optimiser steps, and speech into face PNGs."""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.profiler import record_function
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from data.audio import (SAMPLE_RATE, find_audio_files, load_speech, prepare_waveform,
                        speech_windows)
from data.dataset import SpeechFaceDataset
from data.schema import PairFileInfo, validate_pair_file
from distributed import SINGLE_PROCESS, Ranks
from ema import EMA_PARTS, GeneratorEma
from models import ModelArgs, SpeechToFace, sample_noise
from models.losses import (feature_matching_loss, lsgan_discriminator_loss, lsgan_generator_loss,
                           reconstruction_l1, speaker_softmax_loss)
from utils import (UserError, Visualizer, face_grid, load_checkpoint, prepare_output_dir,
                   save_checkpoint, save_png, seed_everything, to_uint8_images)

SAMPLE_FACES = 16            # held-out pairs drawn in every epoch's grid
TRAIN_SAMPLE_FACES = 8      # training pairs drawn beside them
VALIDATION_PAIRS = 256       # held-out pairs scored each epoch


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
    """Fixed pairs drawn every epoch: centre-cropped speech and the real faces."""
    waveforms: torch.Tensor      # (N, 1, T)
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
    state = checkpoint[key]
    for part in parts:
        own = getattr(model, part).state_dict()
        theirs = {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}
        if part == "speaker_classifier" and any(theirs[k].shape != own[k].shape for k in own):
            print(f"note: {source} has another number of speakers; its speaker classifier "
                  "is not loaded")
            continue
        getattr(model, part).load_state_dict(theirs)


# ---------------------------------------------------------------- one training step

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device):
    """Mixed precision for forward passes and losses; fp32 runs as written."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


class GeneratorSide(nn.Module):
    """Speech encoder, face generator and speaker classifier as one module.

    DDP wraps whole modules and the GAN's two halves step apart, so the generator half is
    gathered here and the discriminator is wrapped on its own. The parameters are the
    model's own: checkpoints keep saving the plain `model.state_dict()`.
    """

    def __init__(self, model: SpeechToFace):
        super().__init__()
        self.args = model.args
        self.speech_encoder = model.speech_encoder
        self.face_generator = model.face_generator
        self.speaker_classifier = model.speaker_classifier

    def forward(self, waveform: torch.Tensor):
        """waveform (B, 1, T) -> (embedding (B, E), faces (B, 3, S, S), speaker logits (B, K))."""
        embedding = self.speech_encoder(waveform)
        noise = sample_noise(self.args, len(waveform), waveform.device)
        return embedding, self.face_generator(embedding, noise), self.speaker_classifier(embedding)


class GanStep:
    """One batch of training, apart from the loop: a discriminator step, then a generator step.

    Holds the networks' optimizers (Adam, betas 0.5/0.999, as wav2pix); G's optimizer also
    trains the speech encoder and the speaker classifier. With several processes both
    halves are DDP modules, which average the gradients over the processes in backward.
    """

    def __init__(self, model: SpeechToFace, options, device: torch.device,
                 ranks: Ranks = SINGLE_PROCESS):
        self.model, self.options, self.device = model, options, device
        betas = (0.5, 0.999)
        self.optimizer_g = torch.optim.Adam(model.generator_parameters(), options.lr_G,
                                            betas=betas)
        self.optimizer_d = torch.optim.Adam(model.projection_discriminator.parameters(),
                                            options.lr_D, betas=betas)
        self.generator_side = ranks.wrap(GeneratorSide(model), device)
        self.discriminator = ranks.wrap(model.projection_discriminator, device)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        fp16 = options.precision == "fp16"
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=fp16)
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=fp16)

    def autocast(self):
        return autocast(self.options.precision, self.device)

    def __call__(self, batch) -> dict[str, float]:
        waveform, real, speaker_id, wrong = (t.to(self.device, non_blocking=True) for t in batch)
        real, wrong = (faces.contiguous(memory_format=torch.channels_last) for faces in (real, wrong))
        with record_function("encoder_and_generator_forward"), self.autocast():
            embedding, fake, logits = self.generator_side(waveform)  # once; D gets it detached
        d_values, real_features = self.discriminator_step(real, fake.detach(), wrong,
                                                          embedding.detach())
        g_values = self.generator_step(real, fake, embedding, logits, speaker_id, real_features)
        return {k: v.item() for k, v in {**d_values, **g_values}.items()}

    def discriminator_step(self, real, fake, wrong, condition):
        """Real pair -> 0.9, generated and wrong pairs -> 0; the three passes run as one batch."""
        with record_function("discriminator_forward"), self.autocast():
            scores, features = self.discriminator(torch.cat([real, fake, wrong]),
                                                  torch.cat([condition, condition, condition]))
            real_scores, fake_scores, wrong_scores = scores.chunk(3)
            d_loss = lsgan_discriminator_loss(real_scores, fake_scores, wrong_scores)
        with record_function("discriminator_backward_and_adam"):
            backward_and_step(d_loss, self.optimizer_d, self.scaler_d)
        values = {"d_loss": d_loss, "d_real": real_scores.mean(), "d_fake": fake_scores.mean(),
                  "d_wrong": wrong_scores.mean()}
        return values, features[:len(real)].detach()

    def generator_step(self, real, fake, embedding, logits, speaker_id, real_features):
        """G, speech encoder and speaker classifier: adversarial + L1 + feature matching + softmax."""
        o = self.options
        # The plain D, not its DDP wrapper: this pass gives D no weight gradients, and the
        # wrapper would wait for them in backward.
        discriminator = self.model.projection_discriminator
        with record_function("generator_losses_forward"), self.autocast():
            discriminator.requires_grad_(False)  # no weight gradients for D in G's step
            g_scores, g_features = discriminator(fake, embedding)
            discriminator.requires_grad_(True)
            terms = {"g_adv": lsgan_generator_loss(g_scores),
                     "g_l1": reconstruction_l1(fake, real),
                     "g_fm": feature_matching_loss(real_features, g_features),
                     "g_softmax": speaker_softmax_loss(logits, speaker_id)}
            g_loss = (terms["g_adv"] + o.l1_coef * terms["g_l1"] + o.l2_coef * terms["g_fm"]
                      + o.softmax_coef * terms["g_softmax"])
        with record_function("generator_backward_and_adam"):
            backward_and_step(g_loss, self.optimizer_g, self.scaler_g)
        speaker_acc = (logits.argmax(dim=1) == speaker_id).float().mean()
        return {"g_loss": g_loss, **terms, "speaker_acc": speaker_acc}


def backward_and_step(loss, optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward and Adam; a disabled scaler (fp32, bf16) passes the loss through unscaled."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


# ---------------------------------------------------------------- the training loop

class Trainer:
    def __init__(self, options, device: torch.device, dataset_path: Path,
                 ranks: Ranks = SINGLE_PROCESS):
        self.options, self.device, self.ranks = options, device, ranks
        self.info = validate_pair_file(dataset_path)
        self.run_dir = Path("checkpoints") / options.save_path
        if ranks.is_main:                 # the other processes never write
            prepare_output_dir(self.run_dir)
        self.loader_generator = seed_everything(options.seed + ranks.rank)
        self.args = ModelArgs(image_size=options.image_size,
                              audio_samples=round(options.audio_seconds * 16000),
                              num_speakers=len(self.info.speaker_names),
                              noise_dim=options.noise_dim)
        self.train_loader = self._train_loader()     # a batch that cannot fit fails first
        # channels_last: 10-20% faster 2-D convolutions on CPU (benchmarks/README.md).
        self.model = SpeechToFace(self.args).to(device, memory_format=torch.channels_last)
        self._load_pretrained()
        if options.batchnorm == "sync":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.gan_step = GanStep(self.model, options, device, ranks)
        # After DDP has broadcast rank 0's weights, so every process averages the same ones.
        self.ema = GeneratorEma(self.model, options.ema_decay) if options.ema else None
        self.optimizer_g, self.optimizer_d = self.gan_step.optimizer_g, self.gan_step.optimizer_d
        self.held_out = self._held_out_dataset()
        self.held_out_samples = self._sample_set(held_out_split(self.info), SAMPLE_FACES)
        self.train_samples = self._sample_set("train", TRAIN_SAMPLE_FACES)
        self.visualizer = Visualizer(self.run_dir, options) if ranks.is_main else None
        self.epoch, self.step = 0, 0

    def _load_pretrained(self) -> None:
        if self.options.pre_trained_gen:
            checkpoint = load_checkpoint(self.options.pre_trained_gen)
            load_networks(self.model, checkpoint,
                          ("speech_encoder", "face_generator", "speaker_classifier"),
                          self.options.pre_trained_gen)
        if self.options.pre_trained_disc:
            checkpoint = load_checkpoint(self.options.pre_trained_disc)
            load_networks(self.model, checkpoint, ("projection_discriminator",),
                          self.options.pre_trained_disc)

    def _dataset(self, split: str, train: bool) -> SpeechFaceDataset:
        return SpeechFaceDataset(self.info, split, self.args.audio_samples,
                                 self.args.image_size, train=train, seed=self.options.seed)

    def _train_loader(self) -> DataLoader:
        dataset = self._dataset("train", train=True)
        ranks, batch_size = self.ranks, self.options.batch_size
        share = len(dataset) // ranks.world_size
        if batch_size > share:
            each = f", {share} for each of {ranks.world_size} processes" if ranks.distributed else ""
            raise UserError(f"--batch_size {batch_size} is larger than the train split "
                            f"({len(dataset)} pairs{each}); lower --batch_size")
        # One sampler for any number of processes: rank r of N reads perm[r::N] of the
        # permutation one process would read, so N x --batch_size is the global batch.
        sampler = DistributedSampler(dataset, ranks.world_size, ranks.rank, shuffle=True,
                                     seed=self.options.seed, drop_last=True)
        workers = self.options.num_workers
        # Workers are forked anew each epoch (not persistent), so they see dataset.set_epoch.
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                          num_workers=workers, generator=self.loader_generator,
                          pin_memory=self.device.type == "cuda")

    def _held_out_dataset(self) -> SpeechFaceDataset:
        return self._dataset(held_out_split(self.info), train=False)

    def _sample_set(self, split: str, count: int) -> SampleSet:
        """`count` pairs of the split, speakers in turn, read once. The dataset (and its HDF5
        handle) is dropped here, so no handle crosses the fork of the DataLoader's workers."""
        dataset = SpeechFaceDataset(self.info, split, self.args.audio_samples,
                                    self.args.image_size, train=False, in_memory=False)
        rows = spread_over_speakers(dataset.speaker_ids, count)
        return SampleSet(torch.stack([dataset.waveform(i) for i in rows]),
                         torch.stack([dataset.face(i) for i in rows]),
                         [self.info.speaker_names[dataset.speaker_ids[i]] for i in rows])

    def train_epoch(self) -> dict[str, float]:
        self._train_mode()
        self.train_loader.sampler.set_epoch(self.epoch)
        self.train_loader.dataset.set_epoch(self.epoch)
        totals, count = {}, 0
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.options.epochs}",
                   leave=False, dynamic_ncols=True, disable=None if self.ranks.is_main else True)
        for batch in bar:
            losses = self.gan_step(batch)
            if self.ema:
                self.ema.update()
            self.step += 1
            if self.visualizer:          # rank 0's own batch; epoch means cover all processes
                self.visualizer.scalars(self.step, {**losses, **self.learning_rates()},
                                        epoch=self.epoch + 1)
            count += 1
            totals = {k: totals.get(k, 0.0) + v for k, v in losses.items()}
            bar.set_postfix(d=f"{totals['d_loss'] / count:.3f}", g=f"{totals['g_loss'] / count:.3f}",
                            l1=f"{totals['g_l1'] / count:.3f}")
            if self.options.max_steps and self.step >= self.options.max_steps:
                break
        return self.ranks.mean({k: v / max(count, 1) for k, v in totals.items()}, self.device)

    def _train_mode(self) -> None:
        self.model.train()
        if self.options.batchnorm == "frozen":   # normalise with the stored running statistics
            for module in self.model.modules():
                if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)):
                    module.eval()

    @property
    def rendering_model(self) -> SpeechToFace:
        """What held-out scores and sample grids use: the averaged generator under --ema."""
        return self.ema.average if self.ema else self.model

    @torch.no_grad()
    def held_out_scores(self) -> dict[str, float]:
        """L1 to the true frame, and how often a generated face is nearest its own speaker's
        mean real face (a cheap identity check until a face classifier scores it)."""
        self.model.eval()
        rows = spread_over_speakers(self.held_out.speaker_ids, VALIDATION_PAIRS)
        l1, hits = 0.0, 0
        mean_faces = self._mean_faces()
        for start in range(0, len(rows), 64):
            chunk = rows[start:start + 64]
            waveform = torch.stack([self.held_out.waveform(i) for i in chunk]).to(self.device)
            real = torch.stack([self.held_out.face(i) for i in chunk]).to(self.device)
            _, fake = self.rendering_model(waveform)
            l1 += (fake - real).abs().mean(dim=(1, 2, 3)).sum().item()
            nearest = torch.cdist(fake.flatten(1), mean_faces.flatten(1)).argmin(dim=1).cpu()
            hits += (nearest.numpy() == self.held_out.speaker_ids[chunk]).sum()
        self.model.train()
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
        _, fake = self.rendering_model(samples.waveforms.to(self.device))
        self.model.train()
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
        for title, samples in (("held-out speech", self.held_out_samples),
                               ("training speech", self.train_samples)):
            first_row = zip(samples.speakers[:8], samples.waveforms)
            clips = [(f"{column + 1}: {speaker}", waveform[0].numpy())
                     for column, (speaker, waveform) in enumerate(first_row)]
            self.visualizer.speech(f"{title}, in grid order", clips, SAMPLE_RATE)

    def checkpoint_payload(self) -> dict:
        return {"model_args": asdict(self.args), "networks": self.model.state_dict(),
                "optimizer_g": self.optimizer_g.state_dict(),
                "optimizer_d": self.optimizer_d.state_dict(),
                "epoch": self.epoch, "step": self.step, "options": vars(self.options),
                "speaker_names": self.info.speaker_names, **self._scaling_payload()}

    def _scaling_payload(self) -> dict:
        """What --ema, --precision fp16 and torchrun add to a checkpoint."""
        payload = {"world_size": self.ranks.world_size,
                   "grad_scalers": {"d": self.gan_step.scaler_d.state_dict(),
                                    "g": self.gan_step.scaler_g.state_dict()}}
        if self.ema:
            payload.update(ema=self.ema.state_dict(), ema_updates=self.ema.updates)
        return payload

    def save(self) -> Path:
        return save_checkpoint(self.run_dir, self.checkpoint_payload(),
                               f"checkpoint_epoch{self.epoch:04d}.pt")

    def train(self) -> Path | None:
        """Train; returns the last checkpoint written (None in processes other than rank 0)."""
        if self.ranks.is_main:
            print(f"training on {self.device}{self._processes_note()}: "
                  f"{len(self.train_loader.dataset)} train pairs, "
                  f"{len(self.info.speaker_names)} speakers, run folder {self.run_dir}")
            self.show_sample_speech()
        checkpoint = None
        while self.epoch < self.options.epochs:
            losses = self.train_epoch()
            self.epoch += 1
            if self.ranks.is_main:
                checkpoint = self.end_epoch(losses) or checkpoint
            if self._finished():
                break
        return checkpoint

    def end_epoch(self, losses: dict[str, float]) -> Path | None:
        """Score, draw, log and maybe save: the main process's work after each epoch."""
        scores = self.held_out_scores()
        self.visualizer.metrics(self.step, scores, epoch=self.epoch)
        grid = self.save_sample_grids()
        self.visualizer.epoch_end(self.epoch, self.step, losses)
        print(f"epoch {self.epoch}: " + "  ".join(f"{k} {v:.4f}" for k, v in
                                                  {**losses, **scores}.items())
              + f"  grid {grid}")
        if self.epoch % self.options.checkpoint_every == 0 or self._finished():
            return self.save()
        return None

    def _processes_note(self) -> str:
        if not self.ranks.distributed:
            return ""
        return (f" x {self.ranks.world_size} processes (global batch "
                f"{self.ranks.world_size} x {self.options.batch_size})")

    def _finished(self) -> bool:
        steps_done = self.options.max_steps and self.step >= self.options.max_steps
        return bool(steps_done) or self.epoch >= self.options.epochs


# ---------------------------------------------------------------- inference

def generator_from_checkpoint(path, device: torch.device) -> tuple[SpeechToFace, dict]:
    """The generator side of a checkpoint: its averaged weights when the run kept them (--ema)."""
    checkpoint = load_checkpoint(path)
    model = SpeechToFace(ModelArgs(**checkpoint["model_args"]))
    load_networks(model, checkpoint, EMA_PARTS, path, "ema" if "ema" in checkpoint else "networks")
    return model.to(device).eval(), checkpoint


@torch.no_grad()
def render_test_split(model: SpeechToFace, info: PairFileInfo, out_dir: Path, device,
                      split: str = "test") -> int:
    """One PNG per pair of the split: the generated face beside the real frame."""
    dataset = SpeechFaceDataset(info, split, model.args.audio_samples, model.args.image_size,
                                train=False)
    names = info.speaker_names
    for start in tqdm(range(0, len(dataset), 64), desc="rendering", leave=False, disable=None):
        rows = range(start, min(start + 64, len(dataset)))
        waveform = torch.stack([dataset.waveform(i) for i in rows]).to(device)
        real = torch.stack([dataset.face(i) for i in rows])
        _, fake = model(waveform)
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


def run_inference(options, device: torch.device, dataset_path: Path | None) -> Path:
    source = options.pre_trained_gen or Path("checkpoints") / options.save_path
    model, checkpoint = generator_from_checkpoint(source, device)
    if "ema" in checkpoint:
        print("note: rendering with the run's averaged generator (--ema)")
    out_dir = prepare_output_dir(Path("results") / options.save_path)
    if options.audio:
        count = render_audio_files(model, options.audio, out_dir, device)
    else:
        info = validate_pair_file(dataset_path)
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
