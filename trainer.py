"""Training: turns losses into optimiser steps, and keeps a run able to stop and go on.

The Trainer runs the loop and owns where a run stands (epoch, step, checkpoints, resume);
it composes GanStep (models/gan_step.py: one batch's losses, optimisers and averaged
generator), PreciseBatchNorm, and on the main process RunReports (held-out scores, the
--eval_every metrics, sample grids, best.pt). Rendering and --evaluate live in
models/inference.py.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.audio import SAMPLE_RATE
from data.dataset import SpeechFaceDataset, held_out_split, in_chunks, spread_over_speakers
from data.device_batches import DeviceBatches, hold_on_device
from data.order import BlockOrder, seed_worker, training_order
from data.schema import PairFileInfo, validate_pair_file
from models import ModelArgs, SpeechToFace
from models.blocks import BATCH_NORMS
from models.compiled import memory_format_for
from models.ema import GeneratorEma
from models.gan_step import NonFiniteLoss, describe_losses
from models.graphed_step import training_step
from models.loading import (check_resume_architecture, finetune_base, load_pretrained,
                            model_args_for)
from models.metrics import best_metric
from models.metrics.evaluation import EVAL_SAMPLES, SplitEvaluation, evaluation_for
from models.metrics.suite import format_table
from models.mouth_refit import mouth_reader_for
from models.panels import GAN_PANELS
from models.precise_batchnorm import PreciseBatchNorm
from models.run_state import (EpochProgress, NonFiniteGuard, TrainingDiverged,  # noqa: F401
                              check_place_in_epoch, networks_finite)
from utils import (SINGLE_PROCESS, Ranks, StoppedBySignal, StopSignals, Visualizer,
                   face_grid, prepare_output_dir, save_checkpoint, seed_everything)
from utils import (check_resumable, checkpoint_name, prune_checkpoints, remove_partial_files,
                   restore_rank_rng_states, rng_states, save_checkpoint_file, trim_log)

SAMPLE_FACES = 16            # held-out pairs drawn in every epoch's grid
TRAIN_SAMPLE_FACES = 8      # training pairs drawn beside them
VALIDATION_PAIRS = 256       # held-out pairs scored each epoch


@dataclass
class SampleSet:
    """Fixed pairs drawn every epoch: their condition (centre-cropped speech) and real faces."""
    conditions: torch.Tensor     # (N, 1, T) speech, (N, E) stored vectors, or (N, 0)
    faces: torch.Tensor          # (N, 3, S, S)
    speakers: list[str]

    @classmethod
    def of(cls, dataset: SpeechFaceDataset, speaker_names: list[str], count: int) -> "SampleSet":
        """`count` pairs of the dataset, speakers in turn, read once."""
        rows = spread_over_speakers(dataset.speaker_ids, count)
        return cls(*dataset.batch(rows), [speaker_names[dataset.speaker_ids[i]] for i in rows])


# ---------------------------------------------------------------- the training loop

class Trainer:
    def __init__(self, options, device: torch.device, dataset_path: Path,
                 resume: dict | None = None, ranks: Ranks = SINGLE_PROCESS):
        """`resume`: a checkpoint to continue exactly (runtime.py loads it for --resume);
        `ranks`: this process's place among torchrun's (one process by default)."""
        self.options, self.device, self.ranks = options, device, ranks
        self.info = validate_pair_file(dataset_path)
        self.base, self.speaker_names, self.speaker_map = finetune_base(options, self.info)
        self.args = model_args_for(options, self.info, self.base, len(self.speaker_names))
        self.run_dir = Path("checkpoints") / options.save_path
        if ranks.is_main:                  # the other processes never write
            prepare_output_dir(self.run_dir)
        self.loader_generator = seed_everything(options.seed + ranks.rank)
        if resume is not None:
            check_resume_architecture(self.args, resume, options.resume)
        self.train_loader = self._train_loader()       # a batch that cannot fit fails first
        self.batchnorm = PreciseBatchNorm(self._dataset("train", train=True, in_memory=False),
                                          options.seed, options.batchnorm == "frozen")
        self.model = SpeechToFace(self.args).to(
            device, memory_format=memory_format_for(options.compile, device))
        load_pretrained(self.model, options, self.base)
        if options.batchnorm == "sync":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.gan_step = training_step(self.model, options, device, ranks)
        self.mouth_refit = None
        if options.mouth_open_coef:     # fitted before training; a resumed run reads it back
            self.gan_step.mouth_reader, self.mouth_refit = mouth_reader_for(
                lambda: self._dataset("train", train=False, in_memory=False), self.speaker_names,
                options.seed, device, saved=resume is not None and "mouth_reader" in resume,
                refit_every=options.mouth_refit_every)
        self.reports = RunReports(self) if ranks.is_main else None
        self.epoch, self.step = 0, 0
        self._init_run_state(resume)

    @property
    def ema(self) -> GeneratorEma | None:
        return self.gan_step.ema

    @property
    def rendering_model(self) -> SpeechToFace:
        """What held-out scores, sample grids and evaluation draw with: the averaged
        generator under --ema."""
        return self.ema.average if self.ema else self.model

    def _dataset(self, split: str, train: bool, in_memory: bool | None = None
                 ) -> SpeechFaceDataset:
        return SpeechFaceDataset(self.info, split, self.args.audio_samples,
                                 self.args.image_size, train=train, in_memory=in_memory,
                                 condition=self.args.condition, speaker_map=self.speaker_map)

    def _train_loader(self) -> DataLoader | DeviceBatches:
        o, processes = self.options, self.ranks.world_size
        dataset = self._dataset("train", train=True)
        # Fine-tuning: every step in one epoch of draws, so the held-out scores and the
        # checkpoint come once, at the end.
        draws = o.max_steps * o.batch_size * processes if self.base else None
        # auto never shards a balanced order (each process draws from the whole split)
        held = hold_on_device(o.data_on_device, dataset, self.device,
                              processes if o.balance == "none" else 1)
        self.order = training_order(
            len(dataset), o.batch_size, o.seed, self.ranks.rank, processes, draws,
            sharded=held == "shard", block_rows=o.read_blocks,
            balanced_ids=dataset.speaker_ids if o.balance == "speakers" else None)
        dataset.block_rows = self.order.block_rows if isinstance(self.order, BlockOrder) else 0
        dataset.wrong_faces = o.wrong_faces == "loader"     # batch: the model ignores them
        if held:
            if self.ranks.is_main:
                share = " (each process its share)" if held == "shard" and not draws else ""
                print(f"the train split is held on {self.device}{share}; batches are made there")
            return DeviceBatches(dataset, self.order, o.batch_size, self.device)
        return DataLoader(dataset, batch_size=o.batch_size, sampler=self.order, drop_last=True,
                          num_workers=o.num_workers, persistent_workers=o.num_workers > 0,
                          generator=self.loader_generator,
                          worker_init_fn=seed_worker, pin_memory=self.device.type == "cuda")

    def refresh_batchnorm(self) -> None:
        """Precise BatchNorm statistics for the model (and the averaged generator)."""
        models = [self.model] + ([self.ema.average] if self.ema else [])
        self.batchnorm.refresh(models, self.step, self.device)

    def train(self) -> Path | None:
        """Train to --epochs; returns the last checkpoint. SIGINT/SIGTERM save and raise
        StoppedBySignal; too many non-finite losses in a row raise TrainingDiverged."""
        if self.reports:
            print(f"training on {self.device}{self._processes_note()}: "
                  f"{self.order.num_rows} train pairs, "
                  f"{len(self.speaker_names)} speakers, run folder {self.run_dir}")
            self.reports.show_sample_speech()
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
            losses = self.ranks.mean(self.gan_step(batch, self.step + 1))
        except NonFiniteLoss as fault:
            self.step += 1
            self._skipped(fault.losses)
            return None
        self.step += 1
        self.guard.passed()
        if self.mouth_refit and self.mouth_refit.due(self.step):
            self.model.eval()       # the faces as the rendering model draws them
            self.mouth_refit(self.step, self.rendering_model, self.gan_step.mouth_reader,
                             self.ranks)
            self._train_mode()
        if self.reports:
            self.reports.step(self.step, self.epoch + 1,
                              {**losses, **self.gan_step.learning_rates()})
        return losses

    def end_epoch(self, losses: dict[str, float]) -> None:
        skipped = self.progress.skipped
        self.epoch += 1
        self.progress = EpochProgress()
        self.refresh_batchnorm()         # every process: SyncBatchNorm's statistics are shared
        if self.reports:
            self.model.eval()            # the faces are drawn in eval mode
            self.reports.epoch_ended(self.epoch, self.step, losses, skipped,
                                     self.rendering_model, self.checkpoint_payload)
            self._train_mode()
        if self._finished():
            self.save()                  # the run's result, even right after a skipped batch
        elif self.epoch % self.options.checkpoint_every == 0 or self._save_at_epoch_end:
            self._save_if_healthy()

    def _train_mode(self) -> None:
        """Training mode; --batchnorm frozen keeps BatchNorm on its stored statistics (and
        stops updating them). Each epoch starts here, so drawing faces in eval mode at the
        end of the last one leaves nothing behind."""
        self.model.train()
        if self.options.batchnorm == "frozen":
            for module in self.model.modules():
                if isinstance(module, BATCH_NORMS):
                    module.eval()

    def _finished(self) -> bool:
        steps_done = self.options.max_steps and self.step >= self.options.max_steps
        return bool(steps_done) or self.epoch >= self.options.epochs

    def _processes_note(self) -> str:
        processes = self.ranks.world_size
        if processes == 1:
            return ""
        return (f" x {processes} processes (global batch {processes} x "
                f"{self.options.batch_size})")

    def stop_requested(self) -> int:
        """The signal that asked the run to stop, agreed by every process (0: none): they all
        stop after the same step, or the others would wait for the one that stopped."""
        return self.ranks.max(self.signals.received or 0)

    def _skipped(self, losses: dict[str, float]) -> None:
        """A batch GanStep skipped for a non-finite loss (in every process together):
        counted, logged, and --max_nonfinite_steps in a row stop the run."""
        if self.reports:
            self.reports.skipped_step(self.step, self.epoch + 1, losses)
        self.guard.failed(self.step, losses, self.last_checkpoint)

    # ---- checkpoints, exact resume

    def checkpoint_payload(self, other_ranks_rng: list | None = None) -> dict:
        """Everything a checkpoint holds; the networks unwrapped (no DDP `module.` keys), so a
        checkpoint of N processes loads in one and the other way round."""
        return {"model_args": asdict(self.args), "networks": self.model.state_dict(),
                **self.gan_step.state_dict(),
                "epoch": self.epoch, "step": self.step, "options": vars(self.options),
                "speaker_names": self.speaker_names, "world_size": self.ranks.world_size,
                "resume_state": self.resume_state(other_ranks_rng)}

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
        self.gan_step.load_state_dict(checkpoint)
        self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
        self.progress = EpochProgress(**state["epoch_progress"])
        self.guard.in_a_row = state["nonfinite_in_a_row"]
        self.last_checkpoint = Path(source)
        check_place_in_epoch(self.progress.pairs_done, self.ranks.world_size, checkpoint, source)
        if self.ranks.is_main:
            if checkpoint["speaker_names"] != self.speaker_names:
                print(f"note: {self.info.path} names other speakers than the checkpoint's run")
            trim_log(self.run_dir / "log.jsonl", self.step, self.epoch)  # what it logs again
            print(f"resuming {source} at epoch {self.epoch + 1}, step {self.step}, "
                  f"{self.progress.pairs_done} pairs into the epoch")
        # last: building the networks drew from them
        restore_rank_rng_states(state, self.ranks.rank, self.ranks.world_size)

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


# ---------------------------------------------------------------- what the main process shows

class RunReports:
    """The main process's view of a run: per-step figures and skipped steps in the log, and
    after each epoch the held-out scores, the --eval_every metrics (and best.pt), the sample
    grids; the speech behind the grids once at the start."""

    def __init__(self, trainer: Trainer):
        self.options, self.device, self.run_dir = trainer.options, trainer.device, trainer.run_dir
        split = held_out_split(trainer.info)
        self.held_out = trainer._dataset(split, train=False)
        # Read once; the dataset (and its HDF5 handle) is dropped, so no handle crosses the
        # fork of the DataLoader's workers.
        self.held_out_samples = SampleSet.of(trainer._dataset(split, train=False, in_memory=False),
                                             trainer.speaker_names, SAMPLE_FACES)
        self.train_samples = SampleSet.of(trainer._dataset("train", train=False, in_memory=False),
                                          trainer.speaker_names, TRAIN_SAMPLE_FACES)
        self.visualizer = Visualizer(self.run_dir, self.options, panels=GAN_PANELS)
        self.num_speakers, self.condition = trainer.args.num_speakers, trainer.args.condition
        self.evaluation = training_evaluation(trainer.options, trainer.info, trainer.args,
                                              trainer.device)
        self.best_score = None

    def step(self, step: int, epoch: int, figures: dict[str, float]) -> None:
        self.visualizer.scalars(step, figures, epoch=epoch)

    def skipped_step(self, step: int, epoch: int, losses: dict[str, float]) -> None:
        self.visualizer.log.write(kind="skipped_step", step=step, epoch=epoch,
                                  **{k: v if math.isfinite(v) else str(v)
                                     for k, v in losses.items()})
        tqdm.write(f"note: step {step} skipped, non-finite loss ({describe_losses(losses)})")

    def epoch_ended(self, epoch: int, step: int, losses: dict[str, float], skipped: int,
                    model: SpeechToFace, checkpoint_payload) -> None:
        """Score, draw and log the epoch just ended with `model` (in eval mode);
        `checkpoint_payload()` is what best.pt holds when the identity score improves."""
        scores = {**self.held_out_scores(model),
                  **self.evaluate_if_due(epoch, model, checkpoint_payload)}
        self.visualizer.metrics(step, scores, epoch=epoch)
        grid = self.visualizer.faces(
            "held-out speech: generated faces above the real ones",
            self.sample_grid(model, self.held_out_samples), f"epoch_{epoch:04d}.png", epoch)
        self.visualizer.faces(
            "training pairs: generated faces above the real ones",
            self.sample_grid(model, self.train_samples), f"train_epoch_{epoch:04d}.png", epoch)
        self.visualizer.epoch_end(epoch, step, {**losses, "skipped_steps": skipped})
        print(f"epoch {epoch}: " + "  ".join(f"{k} {v:.4f}" for k, v in
                                             {**losses, **scores}.items())
              + f"  grid {grid}" + (f"  ({skipped} steps skipped)" if skipped else ""))

    @torch.no_grad()
    def held_out_scores(self, model: SpeechToFace) -> dict[str, float]:
        """L1 to the true frame, and how often a generated face is nearest its own speaker's
        mean real face (a cheap identity check until a face classifier scores it)."""
        if not model.conditioned:
            return {}    # random faces have no true frame and no speaker to be scored against
        rows = spread_over_speakers(self.held_out.speaker_ids, VALIDATION_PAIRS)
        l1, hits = 0.0, 0
        for chunk in in_chunks(rows):
            condition, real = (t.to(self.device) for t in self.held_out.batch(chunk))
            _, fake = model(condition)
            l1 += (fake - real).abs().mean(dim=(1, 2, 3)).sum().item()
            nearest = torch.cdist(fake.flatten(1), self.mean_faces.flatten(1)).argmin(dim=1).cpu()
            hits += (nearest.numpy() == self.held_out.speaker_ids[chunk]).sum()
        return {"val_l1": l1 / len(rows), "val_nearest_speaker_acc": hits / len(rows)}

    @cached_property
    def mean_faces(self) -> torch.Tensor:
        """Mean real held-out face per speaker index (zeros for speakers not in the split)."""
        size = self.held_out.image_size
        means = torch.zeros(self.num_speakers, 3, size, size)
        for speaker in np.unique(self.held_out.speaker_ids):
            rows = np.flatnonzero(self.held_out.speaker_ids == speaker)[:32]
            means[speaker] = self.held_out.batch(rows)[1].mean(0)
        return means.to(self.device)

    @torch.no_grad()
    def sample_grid(self, model: SpeechToFace, samples: SampleSet) -> np.ndarray:
        """Generated faces (top row of each pair of rows) above the true frames."""
        real = samples.faces
        _, fake = model(samples.conditions.to(self.device))
        rows = []
        for start in range(0, len(real), 8):
            rows += [fake[start:start + 8].cpu(), real[start:start + 8]]
        if len(rows) > 2 and len(rows[-1]) != len(rows[0]):
            rows = rows[:-2]
        return face_grid(rows)

    def show_sample_speech(self) -> None:
        """The speech behind the first grid row of each sample set, as the encoder hears it
        (pre-emphasised, peak-normalised); it is the same every epoch, so it is sent once."""
        if self.condition != "speech":
            return
        for title, samples in (("held-out speech", self.held_out_samples),
                               ("training speech", self.train_samples)):
            first_row = zip(samples.speakers[:8], samples.conditions)
            clips = [(f"{column + 1}: {speaker}", waveform[0].numpy())
                     for column, (speaker, waveform) in enumerate(first_row)]
            self.visualizer.speech(f"{title}, in grid order", clips, SAMPLE_RATE)

    def evaluate_if_due(self, epoch: int, model: SpeechToFace, checkpoint_payload
                        ) -> dict[str, float]:
        """The metrics as `eval_<name>` log entries, on the epochs --eval_every names."""
        if self.evaluation is None or epoch % self.options.eval_every:
            return {}
        metrics = self.evaluation.run(model)
        print(f"evaluation after epoch {epoch}:\n{format_table(metrics)}")
        self.keep_best(metrics, checkpoint_payload)
        return {f"eval_{key}": value for key, value in metrics.items()}

    def keep_best(self, metrics: dict[str, float], checkpoint_payload) -> None:
        """Write best.pt (durably, beside latest.pt) when the identity score improves."""
        key = best_metric(self.evaluation.suite.names)
        if key is None or (self.best_score is not None and metrics[key] <= self.best_score):
            return
        self.best_score = metrics[key]
        save_checkpoint_file(self.run_dir / "best.pt", {
            **checkpoint_payload(), "best": {"metric": key, "value": metrics[key]}})


def training_evaluation(options, info: PairFileInfo, args: ModelArgs, device
                        ) -> SplitEvaluation | None:
    """--eval_every: the evaluate metrics on the held-out split."""
    if not options.eval_every:
        return None
    split = held_out_split(info)
    evaluation = evaluation_for(options, info, split, args, device,
                                options.eval_samples or EVAL_SAMPLES)
    key = best_metric(evaluation.suite.names)
    print(f"evaluating every {options.eval_every} epochs on {len(evaluation.rows)} "
          f"'{split}' pairs; " + (f"best.pt keeps the best {key}" if key else
                                  "no identity metric chosen, so no best.pt"))
    return evaluation


# ---------------------------------------------------------------- the networks a run starts from
