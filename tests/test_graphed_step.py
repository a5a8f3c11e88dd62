"""--cuda_graph (models/graphed_step.py): the recorded step's body, run unrecorded on CPU,
trains exactly as GanStep does and takes a bad step back; on CUDA, recorded and replayed,
it follows the eager step and reads the GPU once per step."""
from __future__ import annotations

import pytest
import torch

import runtime
from models import ModelArgs, SpeechToFace
from models.blocks import spectral_norms
from models.gan_step import GanStep, NonFiniteLoss
from models.graphed_step import GraphedGanStep, training_step
from utils import SINGLE_PROCESS, UserError

SPEAKERS = 4


def make_step(kind, device, *flags):
    torch.manual_seed(0)
    options = runtime.config_for(["--precision", "fp32", *flags])
    model = SpeechToFace(ModelArgs(image_size=64, num_speakers=SPEAKERS, audio_samples=4000))
    return kind(model.to(device), options, device, SINGLE_PROCESS)


def batches(count, device, size=8):
    generator = torch.Generator().manual_seed(1)
    faces = lambda: torch.rand(size, 3, 64, 64, generator=generator) * 2 - 1  # noqa: E731
    return [tuple(t.to(device) for t in (torch.randn(size, 1, 4000, generator=generator), faces(),
                                         torch.arange(size) % SPEAKERS, faces()))
            for _ in range(count)]


def everything(step: GanStep) -> dict[str, torch.Tensor]:
    tensors = {f"model.{k}": v for k, v in step.model.state_dict().items()}
    for name in ("optimizer_g", "optimizer_d"):
        for index, entry in step.state_dict()[name]["state"].items():
            tensors.update({f"{name}.{index}.{k}": v for k, v in entry.items()})
    return {k: v.detach().cpu().clone() for k, v in tensors.items()}


def test_the_unrecorded_body_trains_bit_for_bit_as_gan_step():
    device = torch.device("cpu")
    eager, graphed = (make_step(kind, device, "--ema") for kind in (GanStep, GraphedGanStep))
    for number, batch in enumerate(batches(3, device), 1):
        assert eager(batch, number) == graphed(batch, number)
    expected, got = everything(eager), everything(graphed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert all(torch.equal(a, b) for a, b in zip(eager.ema.average.state_dict().values(),
                                                  graphed.ema.average.state_dict().values()))


def test_a_non_finite_loss_takes_both_halves_and_the_buffers_back():
    device = torch.device("cpu")
    step = make_step(GraphedGanStep, device)
    good, bad = batches(2, device)
    step(good, 1)
    before = everything(step)
    poisoned = (bad[0].clone().index_fill_(2, torch.tensor([5]), float("nan")), *bad[1:])
    with pytest.raises(NonFiniteLoss) as fault:
        step(poisoned, 2)
    assert fault.value.losses.keys() == {"d_loss"}
    after = everything(step)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert step(bad, 3)["d_loss"] == step.figures[0].item()    # it trains on afterwards


def eval_faces(step: GanStep, condition: torch.Tensor) -> torch.Tensor:
    step.model.eval()
    with torch.no_grad():
        faces = step.model(condition)[1]
    step.model.train()
    return faces


def test_faces_drawn_after_a_step_use_its_weights_not_the_kept_ones():
    """Eval-mode drawing keeps W / sigma per spectral-norm layer. Unrecorded (CPU), the step's
    own forward passes drop them; a CUDA replay runs no Python and bumps no version counter,
    so there the step drops them itself, which only the CUDA test below can tell apart."""
    device = torch.device("cpu")
    step = make_step(GraphedGanStep, device)
    first, second = batches(2, device)
    kept = eval_faces(step, first[0])
    norms = spectral_norms(step.model.face_generator)
    assert norms and all(m._eval_key is not None for m in norms)
    step(second, 1)
    assert all(m._eval_key is None for m in norms)
    assert not torch.equal(eval_faces(step, first[0]), kept)


def test_only_the_cuda_graph_option_chooses_it():
    device = torch.device("cpu")
    assert type(make_step(training_step, device)) is GanStep
    assert type(make_step(training_step, device, "--cuda_graph")) is GraphedGanStep


@pytest.mark.parametrize("flags, device, needs", [
    ([], "cpu", "a GPU"),
    (["--loss", "wgan-gp"], "cuda", "no --loss wgan-gp"),
    (["--precision", "fp16"], "cuda", "no --precision fp16"),
    (["--compile"], "cuda", "no --compile"),
    (["--d_iters", "2"], "cuda", "--d_iters 1"),
    (["--speech_augment", "noise"], "cuda", "no --augment or --speech_augment"),
])
def test_runs_it_cannot_record_are_refused_in_one_line(flags, device, needs):
    options = runtime.build_parser().parse_args(["--cuda_graph", *flags])
    runtime.resolve_variants(options)
    with pytest.raises(UserError, match=f"--cuda_graph needs {needs}"):
        runtime.check_processes_and_device(options, torch.device(device), SINGLE_PROCESS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the graph is recorded "
                    "and replayed there only (benchmarks/gpu_check.sh runs this file)")
def test_on_cuda_the_replayed_step_follows_the_eager_one_and_reads_once():
    device = torch.device("cuda")
    eager, graphed = (make_step(kind, device) for kind in (GanStep, GraphedGanStep))
    data = batches(8, device)
    for number, batch in enumerate(data, 1):
        expected, got = eager(batch, number), graphed(batch, number)
    assert graphed.graph is not None
    assert got["d_loss"] == pytest.approx(expected["d_loss"], rel=1e-3)
    assert got["g_loss"] == pytest.approx(expected["g_loss"], rel=1e-3)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with pytest.warns(UserWarning, match="synchroniz") as caught:
            graphed(data[0], 9)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len([w for w in caught if "synchroniz" in str(w.message)]) == 1
    before = everything(graphed)
    poisoned = (data[1][0].clone().index_fill_(2, torch.tensor([5], device=device),
                                                float("nan")), *data[1][1:])
    with pytest.raises(NonFiniteLoss):
        graphed(poisoned, 10)
    after = everything(graphed)
    assert all(torch.equal(before[k], after[k]) for k in before)
    drawn = eval_faces(graphed, data[0][0])
    for norm in spectral_norms(graphed.model):
        norm.forget()
    assert torch.equal(drawn, eval_faces(graphed, data[0][0]))   # the weights of now
    saved = graphed.state_dict()["optimizer_g"]["state"]
    assert all(entry["step"].device.type == "cpu" for entry in saved.values())


def test_the_command_line_refuses_it_on_the_cpu_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--cuda_graph", "--device", "cpu", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --cuda_graph needs a GPU (this run is on the CPU); drop --cuda_graph "
                   "or change that")
    assert not list(tmp_path.iterdir())          # refused before anything was written
