"""Evaluation metrics for generated faces: are they faces, and do they belong to the speaker?

The registry below names every metric a user can ask for with `--metrics`; options are
checked against it when they are parsed, before any model or detector is loaded.
"""
from __future__ import annotations

from utils import UserError

METRICS = {
    "detection_dlib": "share of faces where dlib's HOG detector finds a face and places all "
                      "68 landmarks (the wav2pix measure)",
    "detection_haar": "share of faces OpenCV's frontal-face Haar cascade finds",
    "identity": "top-1/top-5 accuracy of a speaker classifier trained on the real train faces, "
                "with its accuracy on the real faces as the ceiling",
    "dlib_similarity": "cosine and Euclidean distance of dlib's 128-d descriptors to the "
                       "speaker's real faces and to other speakers' (SF2F)",
    "frechet": "Frechet distance between real and generated faces in the classifier's and "
               "dlib's feature spaces (and Inception FID with --inception)",
    "l1": "mean L1 distance to the paired real frame, in [-1, 1] pixel units",
    "matching": "1:2 matching accuracy and voice-to-face recall@1/5/10 on dlib descriptors",
    "mouth_sync": "within speakers, the correlation of generated with real mouth openness "
                  "(dlib's lip landmarks; on the demo set its mouth contrast), each one's "
                  "spread, and how both follow the loudness of the speech window",
    "grid": "grid artifacts: the mean luma step between neighbouring pixels at the most "
            "stepped phase of a 2, 4 and 8 px period over the mean step (1.0: no grid; "
            "checkerboards and nearest-neighbour mosaics score above), beside the real faces",
    "attributes": "per labelled attribute (<split>/attributes), agreement of a predictor "
                  "trained on the real train faces with the true label: accuracy (classes) "
                  "or correlation (numbers), beside the real faces and a voice-blind baseline",
}

# What needs dlib's face descriptor, and what needs the identity classifier (matching scores
# in its feature space too: on faces unlike photographs, the cartoon demo's, dlib's
# descriptors hardly tell speakers apart, and for unseen speakers nothing else does).
NEEDS_DESCRIPTORS = {"dlib_similarity", "frechet", "matching"}
NEEDS_CLASSIFIER = {"identity", "frechet", "matching"}
# All an unconditional model's faces can be scored on: they pair with no frame or speaker.
UNCONDITIONAL = {"detection_dlib", "detection_haar", "frechet", "grid"}
# best.pt keeps the best figure of the first of these whose metrics a run scores: identity
# accuracy; where the speakers are unseen, 1:2 matching on the predicted labels (what a voice
# can tell), else by dlib's descriptors.
BEST_BY = ((("identity",), "identity_top1"), (("matching", "attributes"), "matching_1v2_labels"),
           (("matching",), "matching_1v2"))


def best_metric(names: list[str]) -> str | None:
    """The figure best.pt is chosen by, for these metric names (None: no best.pt)."""
    return next((figure for metrics, figure in BEST_BY if set(metrics) <= set(names)), None)


def parse_metric_names(text: str) -> list[str]:
    """'all' or a comma-separated list of registry names -> the names, in registry order."""
    if text.strip() == "all":
        return list(METRICS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise UserError(f"--metrics: unknown metric {', '.join(unknown) or repr(text)}; "
                        f"choose from all, {', '.join(METRICS)}")
    return [name for name in METRICS if name in names]
