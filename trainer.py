"""Training and rendering: turns losses into optimiser steps, and speech into face PNGs."""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.audio import find_audio_files, load_speech, prepare_waveform, speech_windows
from data.dataset import SpeechFaceDataset
from data.dataset import read_faces, read_speaker_ids
from data.schema import PairFileInfo, validate_pair_file
from models import ModelArgs, SpeechToFace
from models.metrics import NEEDS_CLASSIFIER, parse_metric_names
from models.metrics.identity_classifier import identity_classifier_for
from models.metrics.suite import FaceMetrics, format_table, load_inception
from models.losses import (feature_matching_loss, lsgan_discriminator_loss, lsgan_generator_loss,
                           reconstruction_l1, speaker_softmax_loss)
from utils import (JsonLog, UserError, face_grid, load_checkpoint, prepare_output_dir,
                   save_checkpoint, save_png, seed_everything, to_uint8_images, write_json)
from utils import resolve_checkpoint, save_checkpoint_file

SAMPLE_FACES = 16            # held-out pairs drawn in every epoch's grid
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


def load_networks(model: SpeechToFace, checkpoint: dict, parts: tuple[str, ...], source) -> None:
    """Copy the named sub-networks of a checkpoint into `model`, saying what does not fit."""
    differences = model.args.differences(ModelArgs(**checkpoint["model_args"]))
    if any(not d.startswith("num_speakers") for d in differences):
        raise UserError(f"{source}: checkpoint was trained with a different architecture "
                        f"({', '.join(differences)}; checkpoint vs now)")
    state = checkpoint["networks"]
    for part in parts:
        own = getattr(model, part).state_dict()
        theirs = {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}
        if part == "speaker_classifier" and any(theirs[k].shape != own[k].shape for k in own):
            print(f"note: {source} has another number of speakers; its speaker classifier "
                  "is not loaded")
            continue
        getattr(model, part).load_state_dict(theirs)


# ---------------------------------------------------------------- training

class Trainer:
    def __init__(self, options, device: torch.device, dataset_path: Path):
        self.options, self.device = options, device
        self.info = validate_pair_file(dataset_path)
        self.run_dir = prepare_output_dir(Path("checkpoints") / options.save_path)
        self.loader_generator = seed_everything(options.seed)
        self.args = ModelArgs(image_size=options.image_size,
                              audio_samples=round(options.audio_seconds * 16000),
                              num_speakers=len(self.info.speaker_names),
                              noise_dim=options.noise_dim)
        self.model = SpeechToFace(self.args).to(device)
        self._load_pretrained()
        betas = (0.5, 0.999)
        self.optimizer_g = torch.optim.Adam(self.model.generator_parameters(), options.lr_G,
                                            betas=betas)
        self.optimizer_d = torch.optim.Adam(self.model.projection_discriminator.parameters(),
                                            options.lr_D, betas=betas)
        self.train_loader = self._train_loader()
        self.held_out = self._held_out_dataset()
        self.sample_rows = spread_over_speakers(self.held_out.speaker_ids, SAMPLE_FACES)
        self.log = JsonLog(self.run_dir / "log.jsonl")
        self.epoch, self.step = 0, 0
        self.evaluation, self.best_score = self._training_evaluation(), None

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
                                 self.args.image_size, train=train)

    def _train_loader(self) -> DataLoader:
        dataset = self._dataset("train", train=True)
        if self.options.batch_size > len(dataset):
            raise UserError(f"--batch_size {self.options.batch_size} is larger than the train "
                            f"split ({len(dataset)} pairs); lower --batch_size")
        workers = self.options.num_workers
        return DataLoader(dataset, batch_size=self.options.batch_size, shuffle=True,
                          drop_last=True, num_workers=workers,
                          persistent_workers=workers > 0, generator=self.loader_generator,
                          pin_memory=self.device.type == "cuda")

    def _held_out_dataset(self) -> SpeechFaceDataset:
        return self._dataset(held_out_split(self.info), train=False)

    # ---- one batch: a discriminator step, then a generator step

    def train_step(self, batch) -> dict[str, float]:
        waveform, real, speaker_id, wrong = (t.to(self.device, non_blocking=True) for t in batch)
        o, model = self.options, self.model
        discriminator = model.projection_discriminator
        embedding, fake = model(waveform)        # G runs once per batch; D gets it detached

        # ---- discriminator: real pair -> 0.9, generated and wrong pairs -> 0
        condition = embedding.detach()
        scores, features = discriminator(torch.cat([real, fake.detach(), wrong]),
                                         torch.cat([condition, condition, condition]))
        real_scores, fake_scores, wrong_scores = scores.chunk(3)
        d_loss = lsgan_discriminator_loss(real_scores, fake_scores, wrong_scores)
        self.optimizer_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizer_d.step()

        # ---- generator (+ speech encoder and speaker classifier)
        discriminator.requires_grad_(False)      # no weight gradients for D in G's step
        g_scores, g_features = discriminator(fake, embedding)
        discriminator.requires_grad_(True)
        terms = {
            "g_adv": lsgan_generator_loss(g_scores),
            "g_l1": reconstruction_l1(fake, real),
            "g_fm": feature_matching_loss(features[:len(real)], g_features),
            "g_softmax": speaker_softmax_loss(model.speaker_classifier(embedding), speaker_id),
        }
        g_loss = (terms["g_adv"] + o.l1_coef * terms["g_l1"] + o.l2_coef * terms["g_fm"]
                  + o.softmax_coef * terms["g_softmax"])
        self.optimizer_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.optimizer_g.step()
        self.step += 1
        values = {"d_loss": d_loss, "g_loss": g_loss, **terms,
                  "d_real": real_scores.mean(), "d_fake": fake_scores.mean(),
                  "d_wrong": wrong_scores.mean()}
        return {k: v.item() for k, v in values.items()}

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        totals, count = {}, 0
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.options.epochs}",
                   leave=False, dynamic_ncols=True, disable=None)
        for batch in bar:
            losses = self.train_step(batch)
            count += 1
            totals = {k: totals.get(k, 0.0) + v for k, v in losses.items()}
            bar.set_postfix(d=f"{totals['d_loss'] / count:.3f}", g=f"{totals['g_loss'] / count:.3f}",
                            l1=f"{totals['g_l1'] / count:.3f}")
            if self.options.max_steps and self.step >= self.options.max_steps:
                break
        return {k: v / max(count, 1) for k, v in totals.items()}

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
            _, fake = self.model(waveform)
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

    @torch.no_grad()
    def save_sample_grid(self) -> Path:
        """Generated faces (top row of each pair of rows) above the true frames."""
        self.model.eval()
        waveform = torch.stack([self.held_out.waveform(i) for i in self.sample_rows])
        real = torch.stack([self.held_out.face(i) for i in self.sample_rows])
        _, fake = self.model(waveform.to(self.device))
        self.model.train()
        rows = []
        for start in range(0, len(real), 8):
            rows += [fake[start:start + 8].cpu(), real[start:start + 8]]
        if len(rows) > 2 and len(rows[-1]) != len(rows[0]):
            rows = rows[:-2]
        path = self.run_dir / "samples" / f"epoch_{self.epoch:04d}.png"
        return save_png(path, face_grid(rows))

    def checkpoint_payload(self) -> dict:
        return {"model_args": asdict(self.args), "networks": self.model.state_dict(),
                "optimizer_g": self.optimizer_g.state_dict(),
                "optimizer_d": self.optimizer_d.state_dict(),
                "epoch": self.epoch, "step": self.step, "options": vars(self.options),
                "speaker_names": self.info.speaker_names}

    def save(self) -> Path:
        return save_checkpoint(self.run_dir, self.checkpoint_payload(),
                               f"checkpoint_epoch{self.epoch:04d}.pt")

    def train(self) -> Path:
        write_json(self.run_dir / "options.json", vars(self.options))
        print(f"training on {self.device}: {len(self.train_loader.dataset)} train pairs, "
              f"{len(self.info.speaker_names)} speakers, run folder {self.run_dir}")
        checkpoint = None
        while self.epoch < self.options.epochs:
            losses = self.train_epoch()
            self.epoch += 1
            scores = self.held_out_scores()
            evaluation = self.evaluate_if_due()
            grid = self.save_sample_grid()
            self.log.write(epoch=self.epoch, step=self.step, **losses, **scores, **evaluation)
            print(f"epoch {self.epoch}: " + "  ".join(f"{k} {v:.4f}" for k, v in
                                                      {**losses, **scores}.items())
                  + f"  grid {grid}")
            if self.epoch % self.options.checkpoint_every == 0 or self._finished():
                checkpoint = self.save()
            if self._finished():
                break
        return checkpoint

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
        metrics = self.evaluation.run(self.model)
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


# ---------------------------------------------------------------- inference

def generator_from_checkpoint(path, device: torch.device) -> tuple[SpeechToFace, dict]:
    checkpoint = load_checkpoint(path)
    model = SpeechToFace(ModelArgs(**checkpoint["model_args"]))
    load_networks(model, checkpoint, ("speech_encoder", "face_generator", "speaker_classifier"),
                  path)
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

    @torch.no_grad()
    def generate(self, model: SpeechToFace) -> np.ndarray:
        """uint8 faces (N, S, S, 3), one per row, in eval mode."""
        was_training = model.training
        model.eval()
        faces = []
        for start in range(0, len(self.rows), 64):
            chunk = self.rows[start:start + 64]
            waveform = torch.stack([self.dataset.waveform(i) for i in chunk]).to(self.device)
            faces.append(to_uint8_images(model(waveform)[1]))
        model.train(was_training)
        return np.concatenate(faces)

    def run(self, model: SpeechToFace) -> dict[str, float]:
        fake = self.suite.analyse(self.generate(model))
        return self.suite.score(fake, self.real, self.speaker_ids)


def unseen_speakers(info: PairFileInfo, split: str) -> bool:
    """True where the split holds a speaker with no train pairs (a speaker-disjoint split)."""
    heard = set(read_speaker_ids(info, "train").tolist())
    return not set(read_speaker_ids(info, split).tolist()) <= heard


def metric_suite(names: list[str], info: PairFileInfo, device, inception_path) -> FaceMetrics:
    """The named metrics, with the identity classifier of this file where one is needed."""
    inception = inception_network(inception_path, device) if inception_path else None
    classifier = None
    if NEEDS_CLASSIFIER & set(names):
        classifier = identity_classifier_for(info.path, lambda: read_faces(info, "train"),
                                             len(info.speaker_names), device)
    return FaceMetrics(names, device, classifier, inception)


def inception_network(path, device):
    try:
        return load_inception(path, device)
    except (RuntimeError, ValueError) as error:
        raise UserError(f"--inception {path}: not a TorchScript model "
                        f"({str(error).splitlines()[0][:100]})") from None


def evaluation_for(options, info: PairFileInfo, split: str, args: ModelArgs, device,
                   limit: int | None) -> SplitEvaluation:
    """Rows of `split` (all, or `limit` spread over the speakers) ready to score."""
    dataset = SpeechFaceDataset(info, split, args.audio_samples, args.image_size, train=False)
    rows = spread_over_speakers(dataset.speaker_ids, limit or len(dataset))
    names = parse_metric_names(options.metrics)
    if "matching" in names and len(np.unique(dataset.speaker_ids[rows])) < 2:
        raise UserError(f"split '{split}' of {info.path} holds one speaker; 1:2 matching "
                        "compares speakers, so evaluate a split with two or more")
    unseen = unseen_speakers(info, split)
    if unseen and "identity" in names:
        names.remove("identity")
        print(f"note: split '{split}' holds speakers the train split lacks; identity accuracy "
              "is undefined for them, so 1:2 matching and recall@K score identity instead")
    suite = metric_suite(names, info, device, options.inception)
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
