"""Several processes on the CPU (gloo), spawned by the tests: training, resuming and evaluating."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from distributed_worker import host, steps_config, train_steps

from lipcli.checkpoint import load_checkpoint
from lipcli.data.batches import shard
from lipcli.layout import LOCK_FILE as LOCK
from lipcli.training.trainer import train
from lipcli.engine import make_engine

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: Any, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node=2 -m lipcli ARGS`` as the README gives it, one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lipcli",
               *(str(a) for a in args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def test_shard_gives_each_process_its_slice_of_every_global_batch() -> None:
    order = torch.arange(10)
    assert shard(order, 4, 2, 0).tolist() == [0, 1, 4, 5] and shard(order, 4, 2, 1).tolist() == [2, 3, 6, 7]
    assert shard(order, 4, 1, 0).tolist() == list(range(10))  # one process: everything, the last batch too


@pytest.mark.parametrize(("defence", "steps", "extra", "tolerance"), [
    ("j2-lip", 1, (), 1e-6),
    ("j1-lip", 1, (), 1e-6),
    ("j2-lip", 4, (), 1e-6),
    # fd: the finite difference must be the one at the global batch's worst example, on whichever process
    # (choosing each process's own worst set the weights 1e-2 apart by step 5); dividing a loss difference by
    # h amplifies float rounding, hence the looser tolerance
    ("j2-lip", 8, ('defence.options.wcat={method="fd", lam=30.0, fd_step=0.1}',), 3e-5),
    ("j2-lip", 8, ('defence.options.wcat={method="worst", lam=30.0}',), 1e-5),
])
def test_distributed_steps_equal_the_single_process_steps(tmp_path: Path, defence: str, steps: int,
                                                           extra: tuple[str, ...], tolerance: float) -> None:
    """Same seed, same global batch of 32: two processes of 16 take the same steps as one process of 32,
    penalty included (its maximum is over the global batch, its gradient reaches the right process)."""
    mp.spawn(train_steps, args=(2, free_port(), str(tmp_path / "two"), defence, steps, extra), nprocs=2, join=True)
    train(steps_config(tmp_path / "one", defence, steps, *extra), make_engine("cpu", plugins=host()))
    two, one = (load_checkpoint(tmp_path / name / "last.pt") for name in ("two", "one"))
    assert one["step"] == two["step"] == steps
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=10 * tolerance, atol=tolerance, msg=key)
    for key in ("grad_norm_max", "penalty", "loss"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=10 * tolerance), key


def test_torchrun_resumes_a_single_process_run_and_its_checkpoint_loads_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Any
) -> None:
    from lipcli.config import resolve
    from lipcli.training import trainer

    config = resolve(None, {}, [
        "data.dataset='digits'", "model.options={width=8}", "training.epochs=2", "training.batch_size=128",
        "training.device='cpu'", "defence.name='j2-lip'", f"output.dir={str(tmp_path / 'run')!r}",
    ])
    real_epoch = trainer._Run._epoch

    def stop_in_epoch_2(self: Any, epoch: int, *args: Any) -> Any:
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(self, epoch, *args)

    monkeypatch.setattr(trainer._Run, "_epoch", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, make_engine("cpu", plugins=host()))
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1

    done = torchrun("train", "--resume", tmp_path / "run", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # 1347 images, 135 held out: 1212 at 128 are 10 steps alone (the last batch 60), 9 on two processes (a short
    # last batch is left out)
    assert [r["epoch"] for r in rows] == [1, 2] and [r["step"] for r in rows] == [10, 19]
    assert rows[0]["val_error"] is not None and rows[1]["val_error"] is not None
    # on schedule although the processes take 9 steps an epoch where one took 10: epoch 2 starts half-way
    # through the 2-epoch cosine, lr 0.1 (1 + cos(pi / 2)) / 2 (by the steps taken it would be 0.041)
    assert rows[1]["lr"] == pytest.approx(0.05, rel=1e-12)
    assert list((tmp_path / "run").glob("*.pt")) and not list((tmp_path / "run").glob("*.tmp"))
    result = run("curve", tmp_path / "run" / "last.pt", "--limit", "10", "--device", "cpu", "-q",
                 "-O", "min-norm.steps=3", "--out", tmp_path / "c")
    assert result.exit_code == 0, result.output  # the distributed checkpoint loads in one process


def test_torchrun_training_writes_one_run(tmp_path: Path) -> None:
    done = torchrun("train", "--dataset", "digits", "--epochs", "1", "--out", tmp_path / "run", "--device", "cpu",
                    "--set", "model.options={width=8}", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name != LOCK) == ["best.pt", "config.toml", "last.pt",
                                                                     "metrics.jsonl"]
    assert json.loads(done.stdout)["final_epoch"] == 1  # rank 0 alone printed its result (one JSON document)
    assert "batch 128 = 2 processes x 64" in done.stderr


def curve_in_one_and_two_processes(run: Any, flags: list[Any], out: Path) -> str:
    """``distances.csv`` of ``lipcli curve FLAGS`` in this process, with one thread as each torchrun process
    computes (the same float rounding), checked to equal that of two processes under torchrun."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run("curve", *flags, "--out", out / "one")
    finally:
        torch.set_num_threads(threads)
    assert single.exit_code == 0, single.output
    done = torchrun("curve", *flags, "--out", out / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    written = (out / "two" / "distances.csv").read_text()
    assert written == (out / "one" / "distances.csv").read_text()
    return written


def test_distributed_curve_and_stats_write_the_single_process_files(tmp_path: Path, checkpoint: Path, run: Any) -> None:
    """Byte-identical files. The single process computes with one thread, as each torchrun process does: the
    order of a multi-threaded reduction changes float rounding, and the attacks' iterates with it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _curve_and_stats_match(tmp_path, checkpoint, run)
    finally:
        torch.set_num_threads(threads)


def _curve_and_stats_match(tmp_path: Path, checkpoint: Path, run: Any) -> None:
    options = ["--limit", "40", "--batch-size", "8", "--device", "cpu", "-q"]
    attacks = ["-a", "min-norm", "-a", "boundary", "-O", "boundary.steps=30", "-O", "min-norm.steps=5"]
    single = run("curve", checkpoint, *options, *attacks, "--out", tmp_path / "one")
    assert single.exit_code == 0, single.output
    done = torchrun("curve", checkpoint, *options, *attacks, "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "two" / "distances.csv").read_text() == (tmp_path / "one" / "distances.csv").read_text()
    one, two = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("one", "two"))
    assert two["queries"] == one["queries"] and two["median_distance"] == one["median_distance"]
    single = run("stats", checkpoint, *options, "--out", tmp_path / "s1")
    assert single.exit_code == 0, single.output
    done = torchrun("stats", checkpoint, *options, "--out", tmp_path / "s2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "s2" / "stats.csv").read_text() == (tmp_path / "s1" / "stats.csv").read_text()
