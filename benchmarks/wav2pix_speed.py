"""wav2pix's own per-batch work and this project's GanStep, timed side by side in one run.

    python benchmarks/wav2pix_speed.py                          # batch 64, 64 and 128 px
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python benchmarks/wav2pix_speed.py                      # as an AVX2-only CPU
    python benchmarks/wav2pix_speed.py --profile 64             # + per-op table of one step

With --profile the table also splits our profiled step into its matrix ops' self time
(convolutions, matrix multiplies) and the rest, and gives the ratio ours would reach if the
rest took no time at all (a bound on what removing overhead can buy), and the matrix ops'
rate on their nominal FLOPs (`torch.utils.flop_counter`) against a 2048^3 sgemm's.

"wav2pix" is a small driver written from ../shared/WAV2PIX.md (not from its code): SEGAN
encoder, DCGAN G with dropout and spectral norm, D with the embedding tiled and stacked at
4x4, speaker classifier, least squares + feature matching + L1 + softmax, Adam, and what it
does per batch: G runs twice, D five times, D's backward runs through G (faces not
detached) and G's backward gives D weight gradients. "ours" is GanStep with wav2pix's
networks' sizes (`--speech_encoder segan --generator dcgan`, the ModelArgs defaults) on
channels_last, as the trainer runs it, with its default `--wrong_faces batch`; "loader" is
the same with `--wrong_faces loader` (a third batch of faces through D, as wav2pix). All
fp32, fake batches of the same shapes; each figure is the median of --repeats iterations
after --warmup, the steps alternating; the CPU columns are the process's CPU seconds per
iteration (load-proof with --threads 1).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runtime  # noqa: E402
from models import ModelArgs, SpeechToFace  # noqa: E402
from models.gan_step import GanStep  # noqa: E402
from train_speed import fake_batch, iteration_flops, print_table  # noqa: E402  (this folder is on sys.path)

SPEAKERS = 10      # wav2pix hard-coded 10 classes


# ---- wav2pix's networks, as WAV2PIX.md describes them
class Wav2pixEncoder(nn.Module):
    """Six blocks pad (6, 7) -> Conv1d(k15, s4) -> BN -> LeakyReLU(0.3); flatten 4096 -> 128."""

    def __init__(self):
        super().__init__()
        blocks, c_in = [], 1
        for c_out in (16, 32, 128, 256, 512, 1024):
            blocks += [nn.ConstantPad1d((6, 7), 0.0), nn.Conv1d(c_in, c_out, 15, 4),
                       nn.BatchNorm1d(c_out), nn.LeakyReLU(0.3)]
            c_in = c_out
        self.convs = nn.Sequential(*blocks)
        self.project = nn.Sequential(nn.Linear(4096, 256), nn.ReLU(), nn.Linear(256, 128),
                                     nn.ReLU(), nn.Linear(128, 128))

    def forward(self, waveform):                     # (B, 1, 16000) -> (B, 128)
        return self.project(self.convs(waveform).flatten(1))


class Wav2pixGenerator(nn.Module):
    """ConvT 128 -> C0 to 4x4, then stride-2 ConvTs to S; spectral norm, no bias, no BN;
    ReLU and Dropout(0.5) after every ConvT but the last, Tanh last."""

    def __init__(self, image_size: int):
        super().__init__()
        channels = {64: [512, 256, 128, 64], 128: [1024, 512, 256, 128, 64]}[image_size]
        layers, c_in = [], 128
        for i, c_out in enumerate(channels):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [spectral_norm(nn.ConvTranspose2d(c_in, c_out, 4, stride, pad, bias=False)),
                       nn.ReLU(), nn.Dropout(0.5)]
            c_in = c_out
        layers += [spectral_norm(nn.ConvTranspose2d(c_in, 3, 4, 2, 1, bias=False)), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, embedding):                    # (B, 128) -> (B, 3, S, S)
        return self.layers(embedding[:, :, None, None])


class Wav2pixDiscriminator(nn.Module):
    """SN Conv2d(k4, s2, p1) + LeakyReLU(0.2) to 4x4 (64-128-256-512[-512]); the embedding
    tiled to 4x4 and stacked on the channels; Conv2d(C + 128 -> 1, k4) gives the score."""

    def __init__(self, image_size: int):
        super().__init__()
        channels = {64: [64, 128, 256, 512], 128: [64, 128, 256, 512, 512]}[image_size]
        layers, c_in = [], 3
        for c_out in channels:
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.trunk = nn.Sequential(*layers)
        self.score = nn.Conv2d(c_in + 128, 1, 4)

    def forward(self, faces, embedding):             # -> (B,) raw scores, (B, C, 4, 4)
        features = self.trunk(faces)
        tiled = embedding[:, :, None, None].expand(-1, -1, 4, 4)
        return self.score(torch.cat([features, tiled], 1)).flatten(), features


class Wav2pixStep:
    """One batch of wav2pix's training: a D step, then a G step, with its waste kept."""

    def __init__(self, image_size: int):
        self.encoder, self.generator = Wav2pixEncoder(), Wav2pixGenerator(image_size)
        self.discriminator = Wav2pixDiscriminator(image_size)
        self.classifier = nn.Sequential(nn.Linear(128, 200), nn.BatchNorm1d(200),
                                        nn.LeakyReLU(0.2), nn.Linear(200, SPEAKERS),
                                        nn.BatchNorm1d(SPEAKERS))
        for network in (self.encoder, self.generator, self.discriminator, self.classifier):
            for layer in network.modules():
                if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                    nn.init.normal_(layer.weight, 0.0, 0.02)    # SN layers: a no-op, as there
                elif isinstance(layer, nn.BatchNorm1d):
                    nn.init.normal_(layer.weight, 1.0, 0.02)
        g_side = [*self.encoder.parameters(), *self.generator.parameters(),
                  *self.classifier.parameters()]
        self.optimizer_g = torch.optim.Adam(g_side, 1e-4, betas=(0.5, 0.999))
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), 4e-4,
                                            betas=(0.5, 0.999))

    def __call__(self, batch, _step=None) -> float:
        speech, real, speaker, wrong = batch
        # D: the generated faces are not detached, so this backward also runs through G.
        self.discriminator.zero_grad()
        embedding = self.encoder(speech)
        fake = self.generator(embedding)
        d_loss = (F.mse_loss(self.discriminator(real, embedding)[0], torch.full((len(real),), 0.9))
                  + F.mse_loss(self.discriminator(wrong, embedding)[0], torch.zeros(len(real)))
                  + F.mse_loss(self.discriminator(fake, embedding)[0], torch.zeros(len(real))))
        d_loss.backward()
        self.optimizer_d.step()
        # G (with encoder and classifier): G runs again, D twice more.
        self.optimizer_g.zero_grad()
        embedding = self.encoder(speech)
        fake = self.generator(embedding)
        fake_scores, fake_features = self.discriminator(fake, embedding)
        _, real_features = self.discriminator(real, embedding)
        g_loss = (F.mse_loss(fake_scores, torch.ones(len(real)))
                  + 100 * F.mse_loss(fake_features.mean(0), real_features.mean(0).detach())
                  + 50 * F.l1_loss(fake, real)
                  + 20 * F.cross_entropy(self.classifier(embedding), speaker))
        g_loss.backward()
        self.optimizer_g.step()
        return g_loss.item()


# ---- this project's step, with wav2pix's networks' sizes
def our_step(image_size: int, wrong_faces: str = "batch") -> GanStep:
    model = SpeechToFace(ModelArgs(image_size=image_size, num_speakers=SPEAKERS))
    model = model.to(memory_format=torch.channels_last)          # as Trainer
    options = runtime.build_parser().parse_args(["--precision", "fp32",
                                                 "--wrong_faces", wrong_faces])
    return GanStep(model, options, torch.device("cpu"))


def step_number(step) -> int:
    return getattr(step, "d_iters", 1)      # a step that takes both D's and G's half


def median_seconds(steps: dict, batch, warmup: int, repeats: int) -> dict[str, tuple]:
    """Median (wall, process CPU) seconds per iteration of each step, the steps run
    alternately so that other load hits both alike. With one thread the CPU seconds hardly
    move with the machine's load; with more they count OpenMP's spinning too."""
    for step in steps.values():
        for _ in range(warmup):
            step(batch, step_number(step))
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start, cpu = time.perf_counter(), time.process_time()
            step(batch, step_number(step))
            times[name].append((time.perf_counter() - start, time.process_time() - cpu))
    return {name: tuple(statistics.median(column) for column in zip(*t))
            for name, t in times.items()}


# The ops that do a step's matrix work (convolutions forward and backward, transposed
# ones inside _convolution, matrix multiplies); everything else is "the rest".
MATRIX_OPS = ("aten::convolution_backward", "aten::mkldnn_convolution", "aten::_convolution",
              "aten::mm", "aten::addmm", "aten::bmm")


def profiled(step, batch):
    from torch.profiler import ProfilerActivity, profile
    step(batch, step_number(step))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step(batch, step_number(step))
    return prof


def sgemm_rate(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` square fp32 matrix multiplies: this CPU's practical
    peak on the current threads, which the matrix ops' rate is held against."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def matrix_and_rest(prof) -> tuple[float, float]:
    """Self CPU seconds of one profiled step in the matrix ops and in all the others."""
    matrix = rest = 0.0
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        if event.key in MATRIX_OPS:
            matrix += seconds
        else:
            rest += seconds
    return matrix, rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", type=int, nargs="*", default=[], metavar="SIZE",
                        help="also print a torch.profiler table of one step of ours per size")
    parser.add_argument("--profile_rows", type=int, default=30)
    bench = parser.parse_args()
    torch.set_num_threads(bench.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ATen "
          f"{torch.backends.cpu.get_cpu_capability()}, fp32, batch {bench.batch_size}")
    rows = []
    for size in bench.image_sizes:
        batch = fake_batch(bench.batch_size, size, 16000, SPEAKERS)
        steps = {"wav2pix": Wav2pixStep(size), "ours": our_step(size),
                 "ours, loader": our_step(size, "loader")}
        seconds = median_seconds(steps, batch, bench.warmup, bench.repeats)
        (wav2pix, wav2pix_cpu), (ours, ours_cpu) = seconds["wav2pix"], seconds["ours"]
        loader = seconds["ours, loader"][0]
        rows.append({"size": size, "wav2pix s/iter": wav2pix, "ours s/iter": ours,
                     "wav2pix samples/s": bench.batch_size / wav2pix,
                     "ours samples/s": bench.batch_size / ours, "ratio": wav2pix / ours,
                     "wav2pix CPU s": wav2pix_cpu, "ours CPU s": ours_cpu,
                     "CPU ratio": wav2pix_cpu / ours_cpu,
                     "loader s/iter": loader, "loader ratio": wav2pix / loader})
        if size in bench.profile:
            prof = profiled(steps["ours"], batch)
            print(f"\nours, {size} px, one step:\n" + prof.key_averages(
                group_by_input_shape=True).table(sort_by="self_cpu_time_total",
                                                 row_limit=bench.profile_rows))
            matrix, rest = matrix_and_rest(prof)
            rate = iteration_flops(steps["ours"], batch) / matrix
            rows[-1].update({"matrix s": matrix, "rest s": rest,
                             "ratio, rest free": wav2pix / matrix,
                             "matrix GFLOP/s": rate / 1e9,
                             "of sgemm peak": rate / sgemm_rate()})
    print_table(rows, list(dict.fromkeys(k for row in rows for k in row)), width=13)


if __name__ == "__main__":
    main()
