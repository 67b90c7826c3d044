"""A run killed with SIGKILL mid-epoch resumes and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from lipcli.checkpoint import load_checkpoint, save_checkpoint
from lipcli.cli.app import build_app
from lipcli.config import dumps
from lipcli.plugin_host import PluginHost
from lipcli.training.trainer import resume, train
from lipcli.engine import Engine

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# Slow enough per epoch (about a second) for the kill to land inside epoch 2 or 3, never after the end.
ARGS = [
    "--dataset", "synthetic", "--arch", "small-cnn", "--defence", "j2-lip", "--epochs", "4", "--batch-size", "16",
    "--device", "cpu", "--seed", "3",
    "--set", "data.options={train_size=4096, test_size=64, channels=1, size=12, num_classes=4}",
    "--set", "model.options={width=8}", "--set", "training.deterministic=true", "--set", "data.crop_padding=2",
    "--set", "data.flip=true", "--set", "training.lr_schedule=multistep", "--set", "training.lr_milestones=[2]",
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


def test_resume_of_a_finished_run_changes_nothing(tmp_path: Path, engine: Engine, tiny_config) -> None:  # type: ignore[no-untyped-def]
    first = train(tiny_config(tmp_path), engine)
    before = (first.run_dir / "last.pt").read_bytes()
    again = resume(first.run_dir, engine)
    assert len(again.history) == 2 and (first.run_dir / "last.pt").read_bytes() == before


def test_resume_refuses_extra_configuration(tmp_path: Path, host: PluginHost, engine: Engine, tiny_config) -> None:  # type: ignore[no-untyped-def]
    run = train(tiny_config(tmp_path), engine).run_dir
    result = CliRunner().invoke(build_app(host), ["train", "--resume", str(run), "--epochs", "9", "--lr", "0.5"])
    assert result.exit_code == 2 and "resumed run keeps its own configuration" in result.output


DETERMINISTIC = ["training.deterministic=true", "data.crop_padding=1", "data.flip=true", "training.lr_schedule=multistep", "training.lr_milestones=[1]"]


def rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def stored_config(run: Path) -> dict[str, Any]:
    return tomllib.loads((run / "config.toml").read_text())


def test_extending_a_finished_run_equals_training_longer(tmp_path: Path, host: PluginHost, engine: Engine, tiny_config) -> None:  # type: ignore[no-untyped-def]
    """A 1-epoch run extended to 2 epochs (``--resume RUN --epochs 2``) ends with the weights of a 2-epoch run
    trained in one go: the multistep rate falls after epoch 1 in both, and the generators are restored."""
    short = train(tiny_config(tmp_path / "a", "training.epochs=1", *DETERMINISTIC), engine).run_dir
    result = CliRunner().invoke(build_app(host), ["train", "--resume", str(short), "--epochs", "2", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 2 and summary["best_val_error"] == min(r["val_error"] for r in rows(short))
    straight = train(tiny_config(tmp_path / "b", "training.epochs=2", *DETERMINISTIC), engine).run_dir
    a, b = load_checkpoint(short / "last.pt"), load_checkpoint(straight / "last.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] == 16
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert [r["lr"] for r in rows(short)] == [r["lr"] for r in rows(straight)] == [0.05, 0.05 * 0.2]
    assert [r["val_error"] for r in rows(short)] == [r["val_error"] for r in rows(straight)]
    # the run is now a 2-epoch run, in its config.toml and its checkpoint
    assert stored_config(short)["training"]["epochs"] == a["config"]["training"]["epochs"] == 2
    assert {**a["config"], "output": None} == {**b["config"], "output": None}


def test_an_extended_cosine_run_follows_the_longer_schedule(tmp_path: Path, engine: Engine, tiny_config) -> None:  # type: ignore[no-untyped-def]
    cosine = ["training.lr_schedule=cosine", "training.lr=0.08"]
    run = train(tiny_config(tmp_path / "a", "training.epochs=1", *cosine), engine).run_dir
    assert [r["lr"] for r in rows(run)] == [0.08]
    resume(run, engine, epochs=3)
    straight = train(tiny_config(tmp_path / "b", "training.epochs=3", *cosine), engine).run_dir
    # epoch starts of a 3-epoch cosine: 0.08 (1 + cos(k pi / 3)) / 2 = 0.08, 0.06, 0.02
    expected = [0.08, 0.04 * (1 + math.cos(math.pi / 3)), 0.04 * (1 + math.cos(2 * math.pi / 3))]
    assert [r["lr"] for r in rows(run)] == [r["lr"] for r in rows(straight)] == pytest.approx(expected, rel=1e-12)
    # but its first epoch annealed to 0 on a 1-epoch plan: it is recorded, so the run is not taken for the
    # straight one (a grid or a report would otherwise merge them), and its config.toml repeats it exactly
    assert stored_config(run)["training"]["epochs"] == 3
    assert stored_config(run)["training"]["earlier_plans"] == [[1, 1]]
    assert load_checkpoint(run / "last.pt")["config"]["training"]["earlier_plans"] == [[1, 1]]
    assert stored_config(straight)["training"].get("earlier_plans", []) == []
    again = train(tiny_config(tmp_path / "c", "training.epochs=3", *cosine, "training.earlier_plans=[[1, 1]]"), engine)
    assert [r["lr"] for r in rows(again.run_dir)] == [r["lr"] for r in rows(run)]
    assert [r["loss"] for r in rows(again.run_dir)] == pytest.approx([r["loss"] for r in rows(run)], rel=1e-6)


def test_an_extended_multistep_run_records_no_earlier_plan(tmp_path: Path, engine: Engine, tiny_config) -> None:  # type: ignore[no-untyped-def]
    """Milestones do not depend on the planned length: the extended run is the longer one."""
    run = train(tiny_config(tmp_path, "training.epochs=1", "training.lr_schedule=multistep"), engine).run_dir
    resume(run, engine, epochs=2)
    assert stored_config(run)["training"]["epochs"] == 2
    assert stored_config(run)["training"].get("earlier_plans", []) == []


def test_a_run_stopped_by_max_steps_is_not_extended(tmp_path: Path, host: PluginHost, engine: Engine, tiny_config) -> None:  # type: ignore[no-untyped-def]
    run = train(tiny_config(tmp_path, "training.max_steps=3"), engine).run_dir
    result = CliRunner().invoke(build_app(host), ["train", "--resume", str(run), "--epochs", "4"])
    assert result.exit_code == 2
    assert "training.max_steps: " in result.output and "stopped at its max_steps (3)" in result.output
    assert stored_config(run)["training"]["epochs"] == 2


def test_a_run_cannot_be_shortened_below_the_epochs_done(tmp_path: Path, host: PluginHost, engine: Engine, tiny_config) -> None:  # type: ignore[no-untyped-def]
    run = train(tiny_config(tmp_path), engine).run_dir
    before = (run / "last.pt").read_bytes(), (run / "config.toml").read_text()
    result = CliRunner().invoke(build_app(host), ["train", "--resume", str(run), "--epochs", "1"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: training.epochs: {run} has trained 2 epochs; it can go on to 2 or more, not 1"
    ]
    assert ((run / "last.pt").read_bytes(), (run / "config.toml").read_text()) == before


def legacy_checkpoint(run: Path) -> None:
    """Rewrite ``run``'s last.pt (after epoch 1, milestone [1]) as lipcli before held-out validation wrote it:
    no ``best_val_error`` but ``best_test_error``, a MultiStepLR ``scheduler`` stepped once and its rate in the
    optimiser state, and a stored configuration without the keys added since."""
    payload = load_checkpoint(run / "last.pt")
    del payload["best_val_error"]
    payload["best_test_error"] = payload["metrics"]["test_error"]
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[1], gamma=0.2)
    optimizer.step()
    scheduler.step()
    payload["scheduler"] = scheduler.state_dict()
    for group in payload["optimizer"]["param_groups"]:
        group.update(lr=optimizer.param_groups[0]["lr"], initial_lr=0.05)
    for section, key in (("data", "validation"), ("data", "validation_seed"), ("training", "lr_schedule"),
                         ("training", "warmup_epochs")):
        del payload["config"][section][key]
    save_checkpoint(run / "last.pt", {k: v for k, v in payload.items() if k not in ("format", "format_version")})
    (run / "config.toml").write_text(dumps(payload["config"]))


def test_a_checkpoint_from_before_held_out_validation_resumes(tmp_path: Path, engine: Engine, tiny_config) -> None:  # type: ignore[no-untyped-def]
    """Such a run trained on every image and kept a best.pt chosen on the test error: it resumes on every image
    at the multistep rate its scheduler had, and its best.pt is left alone (no longer updated)."""
    old = train(tiny_config(tmp_path / "a", "training.epochs=1", "data.validation=0", *DETERMINISTIC), engine).run_dir
    legacy_checkpoint(old)
    (old / "best.pt").write_bytes((old / "last.pt").read_bytes())
    kept = (old / "best.pt").read_bytes()
    result = resume(old, engine, epochs=2)
    straight = train(tiny_config(tmp_path / "b", "training.epochs=2", "data.validation=0", *DETERMINISTIC), engine)
    a, b = load_checkpoint(old / "last.pt"), load_checkpoint(straight.run_dir / "last.pt")
    assert a["step"] == b["step"] == 16  # all 256 images: 8 steps per epoch
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert rows(old)[-1]["lr"] == 0.05 * 0.2 and result.best_val_error is None and a["best_val_error"] is None
    assert (old / "best.pt").read_bytes() == kept
    stored = stored_config(old)
    assert stored["data"]["validation"] == 0 and stored["training"]["lr_schedule"] == "multistep"


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


def test_resume_tolerates_a_metrics_line_cut_short_by_a_crash(tmp_path: Path, engine: Engine, tiny_config) -> None:  # type: ignore[no-untyped-def]
    # an interrupted run: stopped after epoch 1 (8 steps), then the stopping limit is lifted
    cfg = tiny_config(tmp_path, "training.epochs=3", "training.max_steps=8")
    run = train(cfg, engine).run_dir
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 2, "lo')
    payload = load_checkpoint(run / "last.pt")
    payload["config"]["training"]["max_steps"] = None
    save_checkpoint(run / "last.pt", {k: v for k, v in payload.items() if k not in ("format", "format_version")})
    result = resume(run, engine)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and len(result.history) == 3
