"""Two machines as a cluster starts them: one torchrun launcher per node (`--nnodes 2
--nproc_per_node 1`), meeting through a c10d rendezvous and training over gloo; stopped by
SIGTERM to both launchers; resumed across both nodes with `--resume latest`; bit-identical
to an uninterrupted 2-node run of the same length. And stopped as SLURM stops a job step,
by SIGTERM to every process, with the torchrun options of docs/distributed.md's script.

Both nodes are this machine and talk over 127.0.0.1 only: the rendezvous endpoint, each
launcher's address (`--local_addr`) and gloo's interface (GLOO_SOCKET_IFNAME=lo). Node 0
hosts the rendezvous store (`--rdzv_conf is_host=1`) as the first node of a SLURM job does
(docs/distributed.md). c10d numbers the nodes itself; torchrun ignores --node_rank with it.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import assert_identical, write_tiny_pairs
from utils import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
# 12 train pairs, 2 per process: 3 steps of 4 pairs an epoch, 2 epochs. wav2pix's networks
# in fp32, whose resume is bit-identical on CPU (tests/test_resume.py), with noise, so that G
# draws from the generators a resume restores. Few checkpoints (step 4, inside epoch 2, and
# the end): each is 212 MB, written, flushed and read back, about 2 s here.
RUN = ["--dataset", "tiny.h5", "--audio_seconds", "0.3", "--num_workers", "0", "--no_visdom",
       "--batch_size", "2", "--epochs", "2", "--noise_dim", "4", "--precision", "fp32",
       "--speech_encoder", "segan", "--generator", "dcgan", "--checkpoint_every_steps", "4"]
STEPS = 6
# SIGTERM once this is written: a run checks for a signal after each step, before it saves
# that step's checkpoint, so the stop comes after step 5, inside epoch 2, with a save of its own.
SCHEDULED = "checkpoint_epoch0002_step00000004.pt"
ON_SIGTERM = "checkpoint_epoch0002_step00000005.pt"
# As docs/distributed.md's SLURM script: torchrun leaves SIGTERM to the training processes.
SIGTERM_LEFT_ALONE = ("--signals_to_handle", "SIGINT,SIGHUP,SIGQUIT")
TIMEOUT = 150            # seconds for one launch to end; each took under 60 s here
SIGTERM_EXIT = 128 + signal.SIGTERM

# runtime.py as `python runtime.py` runs it, leaving two files per process: its pid, for the
# clean-up if the test fails (torchrun starts each process in a session of its own, where a
# signal to the launcher's group does not reach), and its exit status, which torchrun does
# not report once it is stopped by a signal itself.
ENTRY = '''
import os, sys
sys.path.insert(0, sys.argv[1])
tag = os.path.join(sys.argv[2], "rank" + os.environ["RANK"])
open(tag + ".pid", "w").write(str(os.getpid()))
import runtime
code = runtime.main(sys.argv[3:])
open(tag + ".exit", "w").write(str(code))
sys.exit(code)
'''


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1, distinct from each other."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


class TwoNodes:
    """Two torchrun launchers, node 0 and node 1, of one training process each, every
    launcher in a process group of its own as srun starts them. `folder` gets each node's
    stdout and stderr and each process's pid and exit status."""

    def __init__(self, workdir: Path, name: str, port: int, *args: str,
                 launcher_options: tuple[str, ...] = ()):
        self.folder = workdir / f"{name}.nodes"
        self.folder.mkdir()
        self.entry = self.folder / "entry.py"
        self.entry.write_text(ENTRY)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
        self.launchers, self.codes, self.saved = [], None, None
        for node in (0, 1):
            command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                       "--nproc_per_node", "1", "--rdzv_backend", "c10d",
                       "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", name,
                       "--rdzv_conf", f"is_host={int(node == 0)},join_timeout=60",
                       "--local_addr", "127.0.0.1", *launcher_options,
                       str(self.entry), str(REPO), str(self.folder), *args]
            with open(self.output(node, "out"), "w") as out, \
                    open(self.output(node, "err"), "w") as err:
                self.launchers.append(subprocess.Popen(
                    command, cwd=workdir, env=env, stdout=out, stderr=err,
                    start_new_session=True))

    def output(self, node: int, stream: str) -> Path:
        return self.folder / f"node{node}.{stream}"

    def read(self, stream: str) -> list[str]:
        return [self.output(node, stream).read_text() for node in (0, 1)]

    def ended(self) -> bool:
        return any(launcher.poll() is not None for launcher in self.launchers)

    def training_processes(self) -> list[int]:
        """The pids of this launch's training processes still running."""
        alive = []
        for pid_file in self.folder.glob("rank*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text())
                if str(self.entry).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    alive.append(pid)
        return alive

    def signal(self, signum: int, training_processes: bool = False) -> None:
        """To each launcher's process group; with `training_processes`, to every process of
        both nodes, as slurmstepd signals a job step."""
        groups = [launcher.pid for launcher in self.launchers]
        for group in groups + (self.training_processes() if training_processes else []):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signum)

    def wait(self) -> None:
        """Until both launchers and their training processes have ended; `codes` are the
        launchers' exit statuses."""
        self.codes = [launcher.wait(timeout=TIMEOUT) for launcher in self.launchers]
        deadline = time.monotonic() + TIMEOUT
        while self.training_processes():
            assert time.monotonic() < deadline, "training processes outlived their launchers"
            time.sleep(0.05)

    def exits(self) -> dict[int, int]:
        """Each training process's exit status, by rank."""
        return {int(p.stem[len("rank"):]): int(p.read_text())
                for p in self.folder.glob("rank*.exit")}

    def kill(self) -> None:
        """Whatever is left of the launchers and their training processes."""
        self.signal(signal.SIGKILL, training_processes=True)
        for launcher in self.launchers:
            launcher.wait(timeout=30)


def wait_for(condition, nodes: TwoNodes) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if nodes.ended():
            pytest.fail(f"a node ended first: {nodes.read('err')}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def log_figures(run: Path) -> list[dict]:
    """Every step's losses, held-out scores and epoch means, in order, without times."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in records
            if r["kind"] in ("iteration", "evaluation", "epoch")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("multinode")
    write_tiny_pairs(folder)
    return folder


@pytest.fixture(scope="module")
def runs(workdir) -> dict[str, TwoNodes]:
    """The uninterrupted run and one stopped by SIGTERM after its first checkpoint, then
    resumed; side by side, which changes when each step runs, not what it computes."""
    straight_port, stopped_port, resumed_port, slurm_port = free_ports(4)
    started = []
    try:
        straight = TwoNodes(workdir, "straight", straight_port, *RUN, "--save_path", "straight")
        started.append(straight)
        stopped = TwoNodes(workdir, "stopped", stopped_port, *RUN, "--save_path", "stopped")
        started.append(stopped)
        wait_for((workdir / "checkpoints" / "stopped" / SCHEDULED).exists, stopped)
        stopped.signal(signal.SIGTERM)
        stopped.wait()
        stopped.saved = load_checkpoint(workdir / "checkpoints" / "stopped" / "latest.pt")
        resumed = TwoNodes(workdir, "resumed", resumed_port,
                           "--resume", "latest", "--save_path", "stopped")
        started.append(resumed)
        slurm = TwoNodes(workdir, "slurm", slurm_port, *RUN, "--save_path", "slurm",
                         "--checkpoint_every_steps", "1", launcher_options=SIGTERM_LEFT_ALONE)
        started.append(slurm)
        wait_for((workdir / "checkpoints" / "slurm" / "checkpoint_epoch0001_step00000001.pt"
                  ).exists, slurm)
        slurm.signal(signal.SIGTERM, training_processes=True)
        slurm.wait()
        straight.wait()
        resumed.wait()
        yield {"straight": straight, "stopped": stopped, "resumed": resumed, "slurm": slurm}
    finally:
        for nodes in started:
            nodes.kill()


def test_two_nodes_train_as_one_run(runs, workdir):
    straight = runs["straight"]
    assert straight.codes == [0, 0], straight.read("err")
    assert straight.exits() == {0: 0, 1: 0}
    banner = "training on cpu x 2 processes (global batch 2 x 2)"
    assert sorted(out.count(banner) for out in straight.read("out")) == [0, 1]   # rank 0's
    checkpoint = load_checkpoint(workdir / "checkpoints" / "straight" / "latest.pt")
    assert (checkpoint["step"], checkpoint["world_size"]) == (STEPS, 2)


def test_sigterm_to_both_launchers_saves_once_and_stops_both_nodes(runs, workdir):
    """Each launcher forwards the signal to its process and exits 1 with torchrun's own
    traceback; the processes agree to stop after the same step, rank 0 saves, and both exit
    with 128 + 15."""
    stopped = runs["stopped"]
    assert stopped.codes == [1, 1], stopped.read("err")
    assert stopped.exits() == {0: SIGTERM_EXIT, 1: SIGTERM_EXIT}
    saved = stopped.saved
    assert (saved["epoch"], saved["step"], saved["world_size"]) == (1, 5, 2)
    assert saved["resume_state"]["epoch_progress"]["pairs_done"] == 8    # of 12
    for err in stopped.read("err"):
        assert "SignalException" in err and "got signal: 15" in err
        assert f"stopped by SIGTERM: saved checkpoints/stopped/{ON_SIGTERM}" in err
        assert "continue with --resume latest --save_path stopped" in err


def test_resumed_across_both_nodes_equals_the_uninterrupted_run_bit_for_bit(runs, workdir):
    resumed = runs["resumed"]
    assert resumed.codes == [0, 0], resumed.read("err")
    assert resumed.exits() == {0: 0, 1: 0}
    mine, theirs = (workdir / "checkpoints" / name for name in ("stopped", "straight"))
    ours, reference = load_checkpoint(mine / "latest.pt"), load_checkpoint(theirs / "latest.pt")
    for key in ("networks", "optimizer_g", "optimizer_d", "epoch", "step", "world_size",
                "resume_state"):     # resume_state: both processes' random generators
        assert_identical(ours[key], reference[key], key)
    assert log_figures(mine) == log_figures(theirs)
    grid = "samples/epoch_0002.png"
    assert (mine / grid).read_bytes() == (theirs / grid).read_bytes()


def test_sigterm_to_every_process_saves_once_when_torchrun_leaves_it_alone(runs, workdir):
    """What slurmstepd does at a time limit, scancel or preemption (proctrack/cgroup): SIGTERM
    to every process of the step, torchrun and the training processes alike. torchrun would
    forward its own, and a second signal stops a process at once, without a checkpoint
    (measured: exit 130, nothing saved); with SIGTERM left out of --signals_to_handle the
    launchers die of it and each training process gets it once, saves and exits 143."""
    slurm = runs["slurm"]
    assert slurm.codes == [-signal.SIGTERM, -signal.SIGTERM], slurm.read("err")
    assert slurm.exits() == {0: SIGTERM_EXIT, 1: SIGTERM_EXIT}, slurm.read("err")
    saved = load_checkpoint(workdir / "checkpoints" / "slurm" / "latest.pt")
    assert (saved["step"], saved["world_size"]) == (2, 2)
    for err in slurm.read("err"):
        assert "saved checkpoints/slurm/checkpoint_epoch0001_step00000002.pt" in err
