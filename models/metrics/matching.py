"""Voice-to-face matching: 1:2 matching and recall@K (SF2F's protocol, dlib in place of
FaceNet), in every face embedding the chosen metrics computed."""
from __future__ import annotations

import numpy as np

from models.metrics.distances import matching_1v2, recall_at_k
from models.metrics.registry import register_metric

RECALL_KS = (1, 5, 10)


def embedding_spaces(fake, real, suite) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(key suffix, distance, generated, real) per space: dlib's descriptors; the identity
    classifier's features (`_classifier`): dlib's recogniser was trained on photographs, and
    on faces far from them (the cartoon demo set) its descriptors barely tell speakers
    apart. With the attributes metric, the attribute predictor's hidden space
    (`_attributes`): it holds only what the labelled attributes need, so it asks whether the
    face carries the speaker's voice-predictable traits, where the classifier's space is
    mostly hair, skin and clothes, which no voice tells; and the predicted labels themselves
    by Euclidean distance (`_labels`, AttributeAgreement.label_space): whether the face's
    traits, as the predictor reads them, are nearer its speaker's than another speaker's."""
    spaces = [("", "cosine", fake.descriptors, real.descriptors)]
    if fake.features is not None:
        spaces.append(("_classifier", "cosine", fake.features, real.features))
    if "attributes" in fake.extra:
        generated, truth = fake.extra["attributes"], real.extra["attributes"]
        spaces.append(("_attributes", "cosine", generated.features, truth.features))
        spaces.append(("_labels", "euclidean",
                       *suite.attributes.label_space(generated.labels, truth.labels)))
    return spaces


@register_metric("matching",
                 "1:2 matching accuracy and voice-to-face recall@1/5/10 on dlib descriptors",
                 needs=("descriptors", "classifier"))
def matching(fake, real, speaker_ids, suite) -> dict[str, float]:
    speakers = len(np.unique(speaker_ids))
    results = {"matching_1v2_chance": 0.5}
    for suffix, distance, generated, truth in embedding_spaces(fake, real, suite):
        results[f"matching_1v2{suffix}"] = matching_1v2(generated, speaker_ids, truth,
                                                       speaker_ids, distance)
        for k, value in recall_at_k(generated, speaker_ids, truth, speaker_ids,
                                    RECALL_KS, distance).items():
            results[f"recall_at_{k}{suffix}"] = value
    for k in RECALL_KS:
        results[f"recall_at_{k}_chance"] = min(k / speakers, 1.0)
    return results
