"""The work folder's lock: re-entrant in a process, one winner over a dead run's lock, patient with a
lock file being written, and a lock of another host refused in one line."""

import json
import multiprocessing
import socket
import subprocess
import threading

import pytest

from unet3d.errors import UserError
from unet3d.runs.lock import LOCK, model_folder_lock


def dead_pid():
    """The pid of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def try_lock(folder, results):
    """In another process: take ``folder``'s lock and report whether it was refused, and how."""
    try:
        with model_folder_lock(folder):
            results.put("won")
    except UserError as error:
        results.put(str(error))


def other_process_tries(folder):
    """What another process gets when it takes ``folder``'s lock: "won" or the error."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=try_lock, args=(folder, results))
    process.start()
    outcome = results.get(timeout=60)
    process.join()
    return outcome


def test_an_inner_block_keeps_the_outer_ones_lock(tmp_path):
    lock = tmp_path / LOCK
    with model_folder_lock(tmp_path):
        with model_folder_lock(tmp_path):  # a fold inside the whole run
            assert lock.is_file()
        assert lock.is_file()
        outcome = other_process_tries(tmp_path)
        assert "another run" in outcome and "on this machine" in outcome
    assert not lock.exists()
    assert other_process_tries(tmp_path) == "won"


def test_threads_of_one_process_share_the_lock(tmp_path):
    inside, leave = threading.Event(), threading.Event()

    def hold():
        with model_folder_lock(tmp_path):
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    inside.wait(10)
    with model_folder_lock(tmp_path):
        pass
    assert (tmp_path / LOCK).is_file()  # still held by the other thread's block
    leave.set()
    thread.join()
    assert not (tmp_path / LOCK).exists()


def contend(folder, rounds, steps, results):
    """One of two processes that take over the same dead lock in each of ``rounds``, in step with the test."""
    for _ in range(rounds):
        steps.wait()
        try:
            with model_folder_lock(folder):
                results.put("won")
                steps.wait()  # held until both have tried
        except UserError as error:
            results.put(str(error))
            steps.wait()
        steps.wait()  # released


def take_over_at_once(tmp_path, rounds):
    """Write a dead run's lock, let two processes take it over at once; the winners of each round."""
    context = multiprocessing.get_context("spawn")
    steps, results = context.Barrier(3, timeout=60), context.Queue()
    workers = [context.Process(target=contend, args=(tmp_path, rounds, steps, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    winners, pid = [], dead_pid()
    for index in range(rounds):
        (tmp_path / LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "round": index}))
        steps.wait()  # go
        steps.wait()  # both have tried
        outcomes = [results.get(timeout=60) for _ in workers]
        steps.wait()  # released
        winners.append(outcomes.count("won"))
        assert all(o == "won" or "another run" in o for o in outcomes), outcomes
    for worker in workers:
        worker.join(60)
    assert list(tmp_path.iterdir()) == []  # no lock, claim or temporary file left
    return winners


def test_two_runs_taking_over_a_dead_lock_at_once_one_wins_every_time(tmp_path):
    assert take_over_at_once(tmp_path, 200) == [1] * 200  # about 3 s


def test_a_lock_file_being_written_is_waited_for(tmp_path):
    lock = tmp_path / LOCK
    lock.write_text('{"pid": 12')  # its creator has written half of it
    owner = json.dumps({"pid": dead_pid(), "host": socket.gethostname()})
    writer = threading.Timer(0.3, lock.write_text, [owner])  # and then the rest: a run that has since ended
    writer.start()
    with model_folder_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] != json.loads(owner)["pid"]
    writer.join()
    assert not lock.exists()


def test_an_empty_lock_file_is_not_taken_for_another_hosts(tmp_path):
    (tmp_path / LOCK).write_text("")
    with pytest.raises(UserError, match="a lock file that names no run") as error:
        with model_folder_lock(tmp_path):
            pass
    assert "host" not in str(error.value) and (tmp_path / LOCK).exists()


def test_a_lock_of_another_host_is_refused_in_one_line(tmp_path):
    (tmp_path / LOCK).write_text(json.dumps({"pid": dead_pid(), "host": "node17.cluster"}))
    with pytest.raises(UserError) as error:
        with model_folder_lock(tmp_path):
            pass
    message = str(error.value)
    assert "\n" not in message and "another run (pid" in message and "on host node17.cluster" in message
    assert f"delete {tmp_path / LOCK} if that run is over" in message and (tmp_path / LOCK).exists()


def test_a_dead_runs_lock_whose_claim_is_unreadable_is_refused_in_time(tmp_path):
    import hashlib

    content = json.dumps({"pid": dead_pid(), "host": socket.gethostname()}).encode()
    (tmp_path / LOCK).write_bytes(content)
    (tmp_path / f"{LOCK}.{hashlib.sha256(content).hexdigest()[:16]}").write_text("")  # a claimant died writing it
    with pytest.raises(UserError, match="the lock of a run that is gone cannot be taken over"):
        with model_folder_lock(tmp_path):
            pass
