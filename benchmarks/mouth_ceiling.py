"""How far can speech predict the real mouth on realvids-dev? The ceiling of mouth sync.

    python benchmarks/mouth_ceiling.py [--pairs FILE] [--seeds 0 1 2]

`mouth sync` (models/metrics/mouth.py) correlates, within each speaker, the generated
face's mouth openness with the real frame's. A generator sees only the speech window, so
no generator can beat the best predictor of the real openness from that window, learnt
from the same train pairs. This script fits such predictors directly, with no face in
between, and scores them as the metric scores faces: within-speaker correlation with the
real openness (dlib's inner lips at the model's 64 px) on the test split, on the long-clip
speakers (those benchmarks/real_video.py's mouth sync column uses) and on all.

Predictors, each trained on the train split's within-speaker openness:
- loudness: the dB of 0.1 s of speech at the lag (after the frame) that fits train best;
- ridge: a ridge regression on the log-mel frames of the window (40 bands, pooled to
  50 ms), its penalty chosen on the train split (speakers held out in turn);
- cnn: a small 1-D convolutional network on the same log-mel frames, trained with L1 on
  the within-speaker z-scored openness, early-stopped on a held-out tenth of train; one row
  per seed, their mean, and that mean averaged with the ridge's prediction;
- with --phones (needs `pip install pocketsphinx==5.1.1`, whose wheel carries an English
  acoustic model and phone language model): each window decoded into phones, and a ridge
  on the phone at each of 9 lags (the frame +-0.2 s, 50 ms apart), one-hot, with a
  hand-set openness per phone (PHONE_OPENNESS); then that ridge averaged into the ensemble.

The pair file is benchmarks/real_video.py's (`--split_by time`, 10 fps), made first if
absent.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.real_video import FIXTURE, clip_seconds, prepared  # noqa: E402
from benchmarks.train_speed import print_table  # noqa: E402
from data.audio import import_torchaudio  # noqa: E402
from models.metrics.face_analysis import DlibFaces  # noqa: E402
from models.metrics.mouth import landmark_mouth_openness, mouth_sync_scores, within_speakers  # noqa: E402

SAMPLE_RATE, HOP, BANDS, POOL = 16000, 160, 40, 5  # 10 ms hops pooled to 50 ms
# CMU phones and silence, with how open a mouth saying each one is (0 shut .. 1 wide): a
# viseme prior set by hand, not fitted; the ridge weighs it beside the one-hot phones.
PHONE_OPENNESS = {
    "AA": 1.0, "AE": 0.9, "AH": 0.85, "AO": 0.9, "AW": 0.9, "AY": 0.9, "HH": 0.6, "EH": 0.7,
    "EY": 0.65, "OW": 0.7, "OY": 0.7, "ER": 0.5, "IH": 0.5, "UH": 0.5, "L": 0.5, "IY": 0.4,
    "Y": 0.45, "K": 0.45, "G": 0.45, "NG": 0.4, "R": 0.4, "UW": 0.35, "TH": 0.35, "DH": 0.35,
    "SH": 0.35, "ZH": 0.35, "CH": 0.35, "JH": 0.35, "T": 0.35, "D": 0.35, "N": 0.35,
    "S": 0.3, "Z": 0.3, "W": 0.3, "F": 0.15, "V": 0.15, "SIL": 0.1, "M": 0.0, "B": 0.0,
    "P": 0.0}
PHONES = list(PHONE_OPENNESS)
PHONE_LAGS = np.round(np.arange(-0.2, 0.201, 0.05), 3)     # seconds after the frame


def load(path: Path, split: str, size: int) -> dict:
    with h5py.File(path, "r") as f:
        group = f[split]
        faces = group["faces"][:]
        resized = F.interpolate(torch.from_numpy(faces).permute(0, 3, 1, 2).float(), size=(size, size),
                                mode="area").round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        return {"faces": np.ascontiguousarray(resized),
                "waveforms": group["waveforms"][:].astype(np.float32) / 32768,
                "speakers": group["speaker_ids"][:]}


def log_mel(waveforms: np.ndarray) -> np.ndarray:
    """(N, L) -> (N, BANDS, L // HOP // POOL) log-mel energies."""
    transforms = import_torchaudio().transforms
    mel = transforms.MelSpectrogram(SAMPLE_RATE, n_fft=400, hop_length=HOP, n_mels=BANDS)
    frames = torch.log(mel(torch.from_numpy(waveforms)) + 1e-6)
    frames = frames[..., :frames.shape[-1] // POOL * POOL]
    return F.avg_pool1d(frames, POOL).numpy()


def loudness_at(waveforms: np.ndarray, lag_seconds: float) -> np.ndarray:
    centre = waveforms.shape[1] // 2 + round(lag_seconds * SAMPLE_RATE)
    half = SAMPLE_RATE // 20
    piece = waveforms[:, max(0, centre - half):centre + half]
    return 10 * np.log10(np.mean(piece ** 2, axis=1) + 1e-10)


def standardised(values: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Within-speaker z-scores (NaN stays NaN)."""
    out = within_speakers(values, speakers)
    for speaker in np.unique(speakers):
        mine = speakers == speaker
        spread = np.nanstd(out[mine])
        out[mine] /= spread if spread > 0 else 1
    return out


def score(predicted, truth, speakers, rows) -> float:
    return mouth_sync_scores(predicted[rows], truth[rows], None, speakers[rows])["mouth_sync"]


def fit_ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    x = np.hstack([x, np.ones((len(x), 1))])
    return np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ y)


def ridge_predict(weights, x):
    return np.hstack([x, np.ones((len(x), 1))]) @ weights


def ridge(train_x, train_y, train_speakers, test_x) -> tuple[np.ndarray, float]:
    """Test predictions with the penalty that predicts held-out train speakers best."""
    best = (-np.inf, None)
    for penalty in (1e2, 1e3, 1e4, 1e5, 1e6, 1e7):
        folds = []
        for speaker in np.unique(train_speakers):
            out = train_speakers == speaker
            if out.sum() < 10:
                continue
            weights = fit_ridge(train_x[~out], train_y[~out], penalty)
            folds.append(np.corrcoef(ridge_predict(weights, train_x[out]), train_y[out])[0, 1])
        quality = np.nanmean(folds)
        best = max(best, (quality, penalty), key=lambda b: b[0])
    return ridge_predict(fit_ridge(train_x, train_y, best[1]), test_x), best[1]


class MouthNet(nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(BANDS, width, 3, padding=1), nn.ReLU(), nn.Dropout(0.2),
            nn.Conv1d(width, width, 3, padding=1), nn.ReLU(), nn.Dropout(0.2),
            nn.Conv1d(width, 1, 3, padding=1))
        self.weights = nn.Parameter(torch.zeros(1))

    def forward(self, frames):  # (N, BANDS, T) -> (N,): the centre frames' output
        out = self.net(frames)[:, 0]
        middle = out.shape[-1] // 2
        return out[:, middle - 2:middle + 3].mean(dim=1)


def cnn(train_x, train_y, test_x, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_x))
    held, fit = order[:len(order) // 10], order[len(order) // 10:]
    x, y = torch.from_numpy(train_x).float(), torch.from_numpy(train_y).float()
    model = MouthNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    best, best_state, patience = np.inf, None, 0
    for _epoch in range(200):
        model.train()
        for batch in np.array_split(rng.permutation(fit), max(1, len(fit) // 32)):
            loss = F.l1_loss(model(x[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            held_loss = F.l1_loss(model(x[held]), y[held]).item()
        if held_loss < best:
            best, best_state, patience = held_loss, {k: v.clone() for k, v in model.state_dict().items()}, 0
        else:
            patience += 1
            if patience >= 15:
                break
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(test_x).float()).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path)
    parser.add_argument("--work", type=Path, default=REPO / "data" / ".cache" / "real_video")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--long_clip", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--phones", action="store_true",
                        help="add predictors from a phone decode (needs pocketsphinx)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    pairs = args.pairs or prepared(args.work, FIXTURE, 10)
    train, test = load(pairs, "train", args.image_size), load(pairs, "test", args.image_size)
    dlib = DlibFaces()
    for split in (train, test):
        split["open"] = landmark_mouth_openness(dlib.landmark_points(split["faces"]))
        split["mel"] = log_mel(split["waveforms"])
    with h5py.File(pairs, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["speaker_names"]]
    long_names = {s for s, d in clip_seconds(FIXTURE).items() if max(d) >= args.long_clip}
    long_ids = [names.index(s) for s in long_names if s in names]
    rows = {"long-clip speakers": np.isin(test["speakers"], long_ids),
            "all speakers": np.ones(len(test["speakers"]), bool)}
    known = np.isfinite(train["open"])
    target = standardised(train["open"], train["speakers"])[known]
    speakers = train["speakers"][known]
    table = []

    def add(name, predicted, note=""):
        table.append({"predictor": name, **{where: score(predicted, test["open"], test["speakers"], r)
                                            for where, r in rows.items()}, "note": note})

    lags = np.round(np.arange(-0.3, 0.31, 0.025), 3)
    fits = [np.corrcoef(within_speakers(loudness_at(train["waveforms"], lag), train["speakers"])[known],
                        target)[0, 1] for lag in lags]
    lag = lags[int(np.nanargmax(fits))]
    add("loudness", loudness_at(test["waveforms"], lag), f"0.1 s at {lag:+.3f} s")

    flat_train = standardised_features(train["mel"], train["speakers"])
    flat_test = standardised_features(test["mel"], test["speakers"])
    predicted, penalty = ridge(flat_train.reshape(len(flat_train), -1)[known], target, speakers,
                               flat_test.reshape(len(flat_test), -1))
    add("ridge on log-mel", predicted, f"penalty {penalty:g}")
    ensemble = []
    for seed in args.seeds:
        ensemble.append(cnn(flat_train[known], target, flat_test, seed))
        add(f"cnn on log-mel, seed {seed}", ensemble[-1])
    add(f"cnn, mean of the {len(ensemble)} seeds", np.mean(ensemble, axis=0))
    add("cnn mean and ridge, averaged", (standardised(np.mean(ensemble, axis=0), test["speakers"])
                                         + standardised(predicted, test["speakers"])) / 2)
    if args.phones:
        phones_train, phones_test = (phone_features(decoded_phones(split["waveforms"]),
                                                    split["speakers"]) for split in (train, test))
        spread = phones_train.std(axis=0) + 1e-3
        by_phones, penalty = ridge((phones_train / spread)[known], target, speakers,
                                   phones_test / spread)
        add("ridge on decoded phones", by_phones, f"pocketsphinx; penalty {penalty:g}")
        add("cnn mean, ridge and phone ridge, averaged",
            sum(standardised(p, test["speakers"])
                for p in (np.mean(ensemble, axis=0), predicted, by_phones)) / 3)
    add("the real openness itself", test["open"], "1 by definition")
    print(f"\n{pairs.name}: {known.sum()} train pairs with lips found, {len(test['open'])} test "
          f"pairs ({rows['long-clip speakers'].sum()} of the {len(long_ids)} long-clip speakers); "
          f"openness at {args.image_size} px; within-speaker correlation with the real openness")
    print_table(table, ["predictor", *rows, "note"], width=28)


def decoded_phones(waveforms: np.ndarray) -> np.ndarray:
    """(N, L) float windows -> int (N, L // HOP): the phone of each 10 ms frame (an index
    into PHONES; noise and filler count as silence), each window decoded on its own."""
    try:
        import pocketsphinx
    except ImportError:
        raise SystemExit("--phones needs pocketsphinx: pip install pocketsphinx==5.1.1") from None
    model = Path(pocketsphinx.get_model_path(), "en-us", "en-us-phone.lm.bin")
    decoder = pocketsphinx.Decoder(allphone=str(model), loglevel="FATAL", beam=1e-20,
                                   pbeam=1e-20, lw=2.0)
    pcm = np.clip(np.round(waveforms * 32768), -32768, 32767).astype(np.int16)
    frames = np.full((len(pcm), pcm.shape[1] // HOP), PHONES.index("SIL"), np.int64)
    for row, window in enumerate(pcm):
        decoder.start_utt()
        decoder.process_raw(window.tobytes(), False, True)
        decoder.end_utt()
        for segment in decoder.seg():
            frames[row, segment.start_frame:segment.end_frame + 1] = (
                PHONES.index(segment.word) if segment.word in PHONES else PHONES.index("SIL"))
    return frames


def phone_features(frames: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """The phone at each of PHONE_LAGS, one-hot, and its PHONE_OPENNESS; each column less
    its speaker's mean."""
    at = frames[:, np.clip(frames.shape[1] // 2 + np.round(PHONE_LAGS * 100).astype(int), 0,
                           frames.shape[1] - 1)]                      # (N, lags)
    one_hot = np.eye(len(PHONES))[at].reshape(len(at), -1)
    features = np.hstack([one_hot, np.array(list(PHONE_OPENNESS.values()))[at]])
    for speaker in np.unique(speakers):
        mine = speakers == speaker
        features[mine] -= features[mine].mean(axis=0)
    return features


def standardised_features(mel: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Log-mel frames less each speaker's mean band energy, over the speaker's spread."""
    out = mel.copy()
    for speaker in np.unique(speakers):
        mine = speakers == speaker
        out[mine] -= out[mine].mean(axis=(0, 2), keepdims=True)
        out[mine] /= out[mine].std() + 1e-6
    return out


if __name__ == "__main__":
    main()
