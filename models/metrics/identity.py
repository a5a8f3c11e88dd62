"""Identity metrics: does a generated face show its speaker, by the identity classifier's
accuracy and by dlib's descriptors' similarity to the speaker's real faces?"""
from __future__ import annotations

from models.metrics.distances import similarity_to_speakers, top_k_accuracy
from models.metrics.registry import register_metric


@register_metric("identity",
                 "top-1/top-5 accuracy of a speaker classifier trained on the real train "
                 "faces, with its accuracy on the real faces as the ceiling",
                 needs=("classifier",))
def identity(fake, real, speaker_ids, suite) -> dict[str, float]:
    results, classes = {}, fake.logits.shape[1]
    for k in (1, 5):
        results[f"identity_top{k}"] = top_k_accuracy(fake.logits, speaker_ids, k)
        results[f"identity_top{k}_real"] = top_k_accuracy(real.logits, speaker_ids, k)
        results[f"identity_top{k}_chance"] = min(k / classes, 1.0)
    return results


@register_metric("dlib_similarity",
                 "cosine and Euclidean distance of dlib's 128-d descriptors to the "
                 "speaker's real faces and to other speakers' (SF2F)",
                 needs=("descriptors",))
def dlib_similarity(fake, real, speaker_ids, suite) -> dict[str, float]:
    scores = similarity_to_speakers(fake.descriptors, speaker_ids, real.descriptors, speaker_ids)
    return {f"dlib_{k}": v for k, v in scores.items()}
