"""A run killed with SIGKILL mid-epoch resumes and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from typer.testing import CliRunner

from lipcli.checkpoint import load_checkpoint, save_checkpoint
from lipcli.cli.app import build_app
from lipcli.plugins import PluginHost
from lipcli.training.trainer import resume, train

# Slow enough per epoch (about a second) for the kill to land inside epoch 2 or 3, never after the end.
ARGS = [
    "--dataset", "synthetic", "--arch", "small-cnn", "--defence", "j2-lip", "--epochs", "4", "--batch-size", "16",
    "--device", "cpu", "--seed", "3",
    "--set", "data.options={train_size=4096, test_size=64, channels=1, size=12, num_classes=4}",
    "--set", "model.options={width=8}", "--set", "training.deterministic=true", "--set", "data.crop_padding=2",
    "--set", "data.flip=true", "--set", "training.lr_milestones=[2]",
]


def epochs_done(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path: Path, host: PluginHost) -> None:
    killed = tmp_path / "killed"
    env = {**os.environ, "LIPCLI_PLUGINS": "lipcli"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lipcli", "train", *ARGS, "--out", str(killed), "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while epochs_done(killed) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # into epoch 2 (each epoch takes about a second)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode() if process.stderr else ""
    interrupted_at = load_checkpoint(killed / "last.pt")["epoch"]
    assert 1 <= interrupted_at < 4  # the kill really interrupted the run

    result = CliRunner().invoke(build_app(host), ["train", "--resume", str(killed), "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"] == 4

    straight = tmp_path / "straight"
    result = CliRunner().invoke(build_app(host), ["train", *ARGS, "--out", str(straight), "--quiet"])
    assert result.exit_code == 0, result.output

    a, b = load_checkpoint(killed / "last.pt"), load_checkpoint(straight / "last.pt")
    assert a["epoch"] == b["epoch"] == 4 and a["step"] == b["step"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    rows_a = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows_a] == [1, 2, 3, 4]
    assert [r["test_error"] for r in rows_a] == [r["test_error"] for r in rows_b]


def test_resume_of_a_finished_run_changes_nothing(tmp_path: Path, host: PluginHost, tiny_config) -> None:  # type: ignore[no-untyped-def]
    first = train(tiny_config(tmp_path), host=host)
    before = (first.run_dir / "last.pt").read_bytes()
    again = resume(first.run_dir, host=host)
    assert len(again.history) == 2 and (first.run_dir / "last.pt").read_bytes() == before


def test_resume_refuses_extra_configuration(tmp_path: Path, host: PluginHost, tiny_config) -> None:  # type: ignore[no-untyped-def]
    run = train(tiny_config(tmp_path), host=host).run_dir
    result = CliRunner().invoke(build_app(host), ["train", "--resume", str(run), "--epochs", "9"])
    assert result.exit_code == 2 and "resumed run keeps its own configuration" in result.output


def test_resume_refuses_a_malicious_checkpoint(tmp_path: Path, host: PluginHost) -> None:
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "lipcli-checkpoint", "format_version": 1, "config": Payload()}, run / "last.pt")
    result = CliRunner().invoke(build_app(host), ["train", "--resume", str(run), "--quiet"])
    assert result.exit_code == 1 and "refused" in result.output
    assert not marker.exists()


def test_resume_tolerates_a_metrics_line_cut_short_by_a_crash(tmp_path: Path, host: PluginHost, tiny_config) -> None:  # type: ignore[no-untyped-def]
    # an interrupted run: stopped after epoch 1 (8 steps), then the stopping limit is lifted
    cfg = tiny_config(tmp_path, "training.epochs=3", "training.max_steps=8")
    run = train(cfg, host=host).run_dir
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 2, "lo')
    payload = load_checkpoint(run / "last.pt")
    payload["config"]["training"]["max_steps"] = None
    save_checkpoint(run / "last.pt", {k: v for k, v in payload.items() if k not in ("format", "format_version")})
    result = resume(run, host=host)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and len(result.history) == 3
