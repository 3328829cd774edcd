"""Data-parallel training: two Gloo processes on CPU train like one process with the same global batch, and two
torchrun "nodes" on this machine train like two processes on one node."""

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from helpers import edit_config, read_log, start, start_training, train, wait_for
from unet3d.device import check_process_devices
from unet3d.errors import UserError
from unet3d.distributed import LEAVING_TIMEOUT, Context, from_environment, process_group, strip_flag

# A two-node run that hangs (a node that never joins, a collective one side left) is stopped after this long.
NODES_TIMEOUT = 300
# Gradients are averaged over processes in another order than over one batch, so the
# figures agree to rounding, not bit for bit.
TOLERANCE = 1e-4
COMPARED = ("loss", "val_loss", "val_dice_WT", "val_dice_TC", "val_dice_ET")


@pytest.fixture
def three_epochs(single_config):
    """The single-model config with 3 epochs of batch size 2."""
    edit_config(single_config, lambda c: c["training"].update(n_epochs=3, batch_size=2, validation_batch_size=1))
    return single_config


def test_strip_flag():
    assert strip_flag(["--a", "1", "--ngpus", "2", "--b"], "--ngpus") == ["--a", "1", "--b"]
    assert strip_flag(["--ngpus=2", "--b"], "--ngpus") == ["--b"]


def test_on_the_second_node_the_first_local_process_does_not_write(monkeypatch):
    """torchrun on node 2 of 2 (4 processes): its first process is local rank 0 but global rank 2."""
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    context = from_environment()
    assert (context.rank, context.local_rank, context.world_size) == (2, 0, 4)
    assert context.enabled and not context.is_main
    monkeypatch.setenv("RANK", "0")
    assert from_environment().is_main


def test_more_cuda_processes_than_gpus_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"^--ngpus 2: this machine has 1 CUDA device\(s\), one per process"):
        check_process_devices(torch.device("cuda"), 2)
    check_process_devices(torch.device("cuda"), 1)
    check_process_devices(torch.device("cpu"), 4)  # Gloo processes share the CPU


def test_two_processes_match_one_and_resume_after_a_kill(three_epochs, tmp_path):
    config = three_epochs
    train(config, "--output_dir", tmp_path / "one")
    single = read_log(tmp_path / "one" / "tiny" / "training_log.csv")

    # Two processes with half the batch each: the same global batch of 2.
    edit_config(config, lambda c: c["training"].update(batch_size=1))
    log_path = tmp_path / "two" / "tiny" / "training_log.csv"
    process, stderr = start_training(config, tmp_path / "two", "--ngpus", "2", start_new_session=True)
    wait_for(log_path, process, rows=1, timeout=300)
    assert process.poll() is None, stderr.read_text()
    kill_tree(process.pid)  # the launcher, torchrun and both training processes
    process.wait()
    assert len(read_log(log_path)) < 3

    resumed = train(config, "--output_dir", tmp_path / "two", "--ngpus", "2")
    assert "resuming" in resumed.stderr
    double = read_log(log_path)
    assert [row["epoch"] for row in double] == ["1", "2", "3"]
    for one, two in zip(single, double):
        for column in COMPARED:
            assert float(two[column]) == pytest.approx(float(one[column]), abs=TOLERANCE), (one["epoch"], column)
    assert not list((tmp_path / "two").rglob(".tmp-*"))


@pytest.mark.slow
def test_two_nodes_train_like_two_processes_on_one_and_resume_after_a_kill(three_epochs, tmp_path):
    """docs/cluster.md's SLURM job for two nodes, each node a torchrun of one process on this machine."""
    config = three_epochs
    edit_config(config, lambda c: c["training"].update(batch_size=1))
    train(config, "--output_dir", tmp_path / "one-node", "--ngpus", "2")
    one_node = read_log(tmp_path / "one-node" / "tiny" / "training_log.csv")

    log_path = tmp_path / "two-nodes" / "tiny" / "training_log.csv"
    with two_nodes(config, tmp_path / "two-nodes", tmp_path / "killed") as nodes:
        wait_while_running(nodes, lambda: log_path.is_file() and len(read_log(log_path)) >= 1)
    killed_after = len(read_log(log_path))
    assert killed_after < 3  # both nodes were killed during the run

    with two_nodes(config, tmp_path / "two-nodes", tmp_path / "resumed") as nodes:
        wait_while_running(nodes, lambda: False)
    stderr = "".join((tmp_path / f"resumed-node{node}.txt").read_text() for node in range(2))
    assert [node.returncode for node in nodes] == [0, 0], stderr
    assert f"after epoch {killed_after}" in stderr  # resumed, not started again
    two_nodes_log = read_log(log_path)
    assert [row["epoch"] for row in two_nodes_log] == ["1", "2", "3"]
    for one, two in zip(one_node, two_nodes_log):
        for column in COMPARED:
            assert float(two[column]) == pytest.approx(float(one[column]), abs=TOLERANCE), (one["epoch"], column)
    # Only global rank 0 writes: the same files as on one node, none left half-written.
    assert files_below(tmp_path / "two-nodes") == files_below(tmp_path / "one-node")
    assert not list((tmp_path / "two-nodes").rglob(".tmp-*"))


def files_below(folder):
    """The paths of the files below ``folder``, relative to it."""
    return sorted(str(path.relative_to(folder)) for path in Path(folder).rglob("*") if path.is_file())


@contextmanager
def two_nodes(config, output_dir, stderr_prefix):
    """Start two torchrun "nodes" of one training process each on this machine, meeting by the c10d rendezvous
    as in docs/cluster.md; yields their Popens and kills both, workers included, when the block ends.

    Each node's stderr goes to ``<stderr_prefix>-node<k>.txt``.
    """
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torchrun = ["-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "two-nodes"]
    nodes = []
    try:
        for node in range(2):
            stderr_path = Path(f"{stderr_prefix}-node{node}.txt")
            with stderr_path.open("w") as stderr:
                nodes.append(start(sys.executable, *torchrun, "-m", "unet3d.scripts.train", "--config_filename",
                                   config, "--device", "cpu", "--output_dir", output_dir,
                                   env={"OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True))
            nodes[-1].stderr_path = stderr_path
        yield nodes
    finally:
        for node in nodes:
            kill_tree(node.pid)
            node.wait()


def wait_while_running(nodes, done):
    """Wait until ``done()`` or both nodes have ended; fails when one fails first or after ``NODES_TIMEOUT`` s."""
    deadline = time.monotonic() + NODES_TIMEOUT
    while not done() and any(node.poll() is None for node in nodes):
        failed = [node for node in nodes if node.poll() not in (None, 0)]
        assert not failed, "".join(f"node {nodes.index(node)} failed:\n{node.stderr_path.read_text()[-3000:]}"
                                   for node in failed)
        assert time.monotonic() < deadline, f"the two nodes ran past {NODES_TIMEOUT} s"
        time.sleep(0.05)


def kill_tree(pid):
    """SIGKILL the process ``pid`` and every process below it, as a cluster that pre-empts a job does.

    Not its process group: torchrun starts each training process in a session of its own, which would outlive it.
    """
    members = process_tree(pid)
    for member in members:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass  # ended meanwhile
    deadline = time.monotonic() + 30
    while any(running(member) for member in members):
        assert time.monotonic() < deadline, f"processes {members} outlived SIGKILL by 30 s"
        time.sleep(0.05)


def running(pid):
    """Whether the process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def process_tree(pid):
    """``pid`` and the processes below it, parents before children (from Linux's ``/proc``)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # the command name may hold spaces
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree = [pid]
    for member in tree:
        tree.extend(children.get(member, []))
    return tree


def test_processes_leave_the_group_together_after_a_normal_end_and_at_once_after_an_exception(monkeypatch):
    calls = []
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(dist, "monitored_barrier", lambda timeout: calls.append(("barrier", timeout)))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    context = Context(rank=1, local_rank=1, world_size=2)
    with process_group(context, torch.device("cpu")) as device:
        calls.append("work")
    assert device == torch.device("cpu")
    assert calls == [("init", "gloo"), "work", ("barrier", LEAVING_TIMEOUT), "destroy"]
    assert LEAVING_TIMEOUT.total_seconds() >= 12 * 3600  # the main process may predict alone for hours

    calls.clear()
    with pytest.raises(RuntimeError, match="a failed step"):
        with process_group(context, torch.device("cpu")):
            raise RuntimeError("a failed step")
    assert calls == [("init", "gloo"), "destroy"]  # a barrier would wait for processes that may be gone
