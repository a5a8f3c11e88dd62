"""GAN-CLS's wrong pairs taken from the batch itself (`--wrong_faces batch`).

A wrong pair is a real face under another speaker's condition (Reed et al. 2016). The
loader can read one extra face per pair for it (`--wrong_faces loader`, wav2pix's way), and
D then runs its trunk on a third batch of faces. With a projection discriminator the face
enters the score only through its trunk features phi(x) (score = psi(phi) + <V c, phi>), so
the wrong pair of condition i with the batch's real face j is scored from phi of face j,
which D's pass over the real faces has computed already: a third of D's step is saved.
"""
from __future__ import annotations

import torch

WRONG_FACES = ("batch", "loader")


def wrong_partners(speaker_ids: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """(B,) int64, on speaker_ids' device: for each pair, another pair of the batch to take the
    face from, drawn uniformly among those of another speaker (of the same speaker only where
    the batch holds one speaker, as the loader does on a one-speaker split). A pure function of
    (seed, step, speaker ids): resumed runs draw the same partners, and nothing is read back
    to the host."""
    count, device = len(speaker_ids), speaker_ids.device
    generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)
    draws = torch.rand(count, count, generator=generator, device=device)   # in [0, 1)
    same = speaker_ids[:, None] == speaker_ids[None, :]
    draws = draws - same.to(draws.dtype)             # another speaker's pair always wins
    draws.fill_diagonal_(-2.0)                       # never the pair itself
    return draws.argmax(dim=1)
