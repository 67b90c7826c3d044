"""Hostile use, through the real CLI: every bad input, interruption and fault ends in a one-line error and a
non-zero exit, and no earlier result changes (files are hashed before and after)."""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from lipcli.data.selection import Selection
from lipcli.attacks import Attack
from lipcli.errors import LipcliError, LipcliWarning, UnknownNameError
from lipcli.evaluation.minimal_distances import evaluate_checkpoints
from lipcli.experiments.grid import load_grid
from lipcli.experiments.grid_runner import pending_stages, run_grid
from lipcli.layout import LOCK_FILE, PARTIAL
from lipcli.plugin_host import PluginHost
from lipcli.engine import Engine
from lipcli.reporting import Reporter

FAST = ["-a", "deepfool", "--masking-check", "0", "--device", "cpu", "--quiet"]


def hashes(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (lock files aside) by relative path, with its content's hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def one_line_error(result: Any, *fragments: str) -> str:
    """The error of a failed command: exit code 1 or 2, one line (a usage hint may follow), no traceback."""
    assert result.exit_code in (1, 2), result.output
    text = result.output.strip()
    assert "Traceback" not in text and text, text
    first = text.splitlines()[0]
    assert len(text.splitlines()) <= 2, text
    for fragment in fragments:
        assert fragment in first, first
    return first


# -- results are never replaced or mixed without being asked ---------------------------------------------------


def test_curve_refuses_a_folder_of_other_settings_and_names_them(run: Callable[..., Any], checkpoint: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "curve"
    assert run("curve", checkpoint, "--limit", 20, "--out", out, *FAST).exit_code == 0
    before = hashes(out)
    refused = run("curve", checkpoint, "--limit", 10, "--out", out, *FAST)
    one_line_error(refused, "images: 20 there, 10 now", "--overwrite")
    assert hashes(out) == before
    other_norm = run("curve", checkpoint, "--limit", 20, "--norm", "linf", "--out", out, *FAST)
    one_line_error(other_norm, "norm")
    assert hashes(out) == before
    replaced = run("curve", checkpoint, "--limit", 10, "--out", out, "--overwrite", *FAST)
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "summary.json").read_text())["images"] == 10


def test_the_same_settings_may_be_measured_again(run: Callable[..., Any], checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "curve"
    for _ in range(2):
        result = run("curve", checkpoint, "--limit", 12, "--out", out, *FAST)
        assert result.exit_code == 0, result.output
    assert not (out / PARTIAL).exists()  # partial results are removed once the full ones are written
    settings = json.loads((out / "summary.json").read_text())["settings"]
    assert settings["images"] == 12 and len(settings["images_sha256"]) == 64 and settings["norm"] == "l2"
    assert settings["attacks"]["deepfool"]["steps"] == 50  # resolved options, defaults included


def test_a_refused_folder_is_left_as_it_was(run: Callable[..., Any], checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    one_line_error(run("curve", checkpoint, "--limit", 8, "--out", out, *FAST), "cannot match")
    assert [p.name for p in out.iterdir()] == ["summary.json"]  # not even a lock file


def test_several_checkpoints_never_draw_over_another_figure(run: Callable[..., Any], checkpoint: Path,
                                                              tanh_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "both"
    assert run("curve", checkpoint, "--limit", 8, "--out", out, *FAST).exit_code == 0
    before = hashes(out)
    one_line_error(run("curve", checkpoint, tanh_checkpoint, "--limit", 8, "--out", out, *FAST), "curve.png")
    assert hashes(out) == before
    assert run("curve", checkpoint, tanh_checkpoint, "--limit", 8, "--out", tmp_path / "two", *FAST).exit_code == 0
    again = run("curve", checkpoint, tanh_checkpoint, "--limit", 8, "--out", tmp_path / "two", *FAST)
    assert again.exit_code == 0, again.output  # the same figure may be drawn again


def test_files_lipcli_cannot_identify_are_never_replaced(run: Callable[..., Any], checkpoint: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "distances.csv").write_text("my own numbers\n")
    before = hashes(out)
    one_line_error(run("curve", checkpoint, "--limit", 8, "--out", out, *FAST), "distances.csv", "--overwrite")
    assert hashes(out) == before


def test_stats_robust_and_data_lipschitz_refuse_other_settings(run: Callable[..., Any], checkpoint: Path,
                                                               tmp_path: Path) -> None:
    commands = {
        "stats": ["stats", checkpoint, "--device", "cpu", "--quiet"],
        "robust": ["robust", checkpoint, "--norm", "l2", "--eps", "0.5", "--version", "fast", "--device", "cpu",
                   "--quiet", "-O", "apgd-ce.steps=2", "-O", "apgd-t.steps=2"],
        "data": ["data-lipschitz", "--dataset", "digits", "--split", "test", "--device", "cpu", "--quiet"],
    }
    for name, command in commands.items():
        out = tmp_path / name
        first = run(*command, "--limit", 12, "--out", out)
        assert first.exit_code == 0, first.output
        before = hashes(out)
        one_line_error(run(*command, "--limit", 6, "--out", out), "other settings", "--overwrite")
        assert hashes(out) == before, name
        assert run(*command, "--limit", 6, "--out", out, "--overwrite").exit_code == 0, name


def test_a_folder_being_written_is_refused(run: Callable[..., Any], checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    with open(out / LOCK_FILE, "w") as held:  # another lipcli holds the folder
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        one_line_error(run("curve", checkpoint, "--limit", 8, "--out", out, *FAST), "another lipcli process")
    assert run("curve", checkpoint, "--limit", 8, "--out", out, *FAST).exit_code == 0  # free again


def test_an_unwritable_out_fails_before_any_attack(run: Callable[..., Any], checkpoint: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import lipcli.evaluation.minimal_distances as evaluate
    import lipcli.lipschitz.measure as measure

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(evaluate, "attack_set", no_work)
    monkeypatch.setattr(measure, "model_statistics", no_work)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for command in (["curve", checkpoint, *FAST], ["stats", checkpoint, "--device", "cpu", "--quiet"]):
        one_line_error(run(*command, "--out", blocker / "sub"), "cannot write to")


class _Interrupted(Attack):
    """DeepFool-like proposals (a step far along the gradient sign) that stop the run on a chosen call."""

    def __init__(self, stop_at: int | None) -> None:
        self.stop_at, self.calls = stop_at, 0

    def run(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(images.shape[0]))
        return (images + 0.5 * (noise - 0.5)).clamp(0, 1)


def test_the_curve_is_drawn_while_its_folder_is_held(checkpoint: Path, tmp_path: Path, engine: Engine,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """curve.png/.svg belong to the folder's results: another lipcli process cannot take the folder (and, with
    --overwrite, empty it) while they are written."""
    from lipcli.evaluation import results

    held: list[bool] = []
    draw = results.draw_evaluations

    def spy(path: Path, *args: Any, **kwargs: Any) -> None:
        with open(path.parent / LOCK_FILE, "a+") as handle:  # what a second process would try
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(False)
            except OSError:
                held.append(True)
        draw(path, *args, **kwargs)

    monkeypatch.setattr(results, "draw_evaluations", spy)
    evaluate_checkpoints([checkpoint], engine, norm="l2", attacks={"noise": _Interrupted(None)}, out=tmp_path / "c",
                         selection=Selection(16), masking_check=0)
    assert held == [True] and (tmp_path / "c" / "curve.png").is_file()


def test_an_attack_of_another_norm_gets_a_note(checkpoint: Path, tmp_path: Path, engine: Engine) -> None:
    """The engine says when an attack minimises another norm than the curve's: its distances are upper bounds."""
    from dataclasses import replace

    class Lines(Reporter):
        def __init__(self) -> None:
            self.lines: list[str] = []

        def info(self, text: str) -> None:
            self.lines.append(text)

    attack, reporter = _Interrupted(None), Lines()
    attack.norms = ("l2",)  # type: ignore[attr-defined]
    evaluate_checkpoints([checkpoint], replace(engine, reporter=reporter), norm="linf", attacks={"noise": attack},
                         out=tmp_path / "c", selection=Selection(8), masking_check=0)
    assert "note: noise minimises l2; its linf distances are measured on those adversarials" in reporter.lines


def test_partial_results_of_other_images_or_devices_are_not_resumed(checkpoint: Path, tmp_path: Path,
                                                                    engine: Engine) -> None:
    """A batch whose attacked images differ (on another device a borderline image may be classified otherwise)
    is attacked again, and partial results written on another kind of device are refused."""
    from lipcli.evaluation.journal import BatchRecord, Journal

    common = dict(norm="l2", eps=[("1", 1.0)], selection=Selection(40), batch_size=8, masking_check=0)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        evaluate_checkpoints([checkpoint], engine, attacks={"noise": _Interrupted(3)}, out=out, **common)
    journal = Journal(out)
    first = sorted((out / PARTIAL).glob("noise-*.0.pt"))[0]
    saved = torch.load(first, weights_only=True)
    record = BatchRecord(saved["rows"][1:], saved["distances"][1:], 0.0, 0, 0)
    journal.save("noise", 0, record)  # as if one image had been classified otherwise there
    again = _Interrupted(None)
    evaluate_checkpoints([checkpoint], engine, attacks={"noise": again}, out=out, **common)
    assert again.calls == _batches_attacked(out) - 1  # batch 0 attacked again, batch 1 resumed
    with pytest.raises(KeyboardInterrupt):
        evaluate_checkpoints([checkpoint], engine, attacks={"noise": _Interrupted(2)}, out=tmp_path / "gpu", **common)
    settings_file = tmp_path / "gpu" / PARTIAL / "settings.json"
    settings_file.write_text(settings_file.read_text().replace('"device_type": "cpu"', '"device_type": "cuda"'))
    with pytest.raises(LipcliError, match="device_type: 'cuda' there, 'cpu' now"):
        evaluate_checkpoints([checkpoint], engine, attacks={"noise": _Interrupted(None)}, out=tmp_path / "gpu", **common)


def _batches_attacked(out: Path) -> int:
    rows = [line.split(",") for line in (out / "distances.csv").read_text().splitlines()[1:]]
    attacked = {int(index) // 8 for index, label, prediction, *_ in rows if label == prediction}
    return len(attacked)


def test_an_interrupted_curve_resumes_its_finished_batches(checkpoint: Path, tmp_path: Path, engine: Engine) -> None:
    common = dict(norm="l2", eps=[("1", 1.0)], selection=Selection(40), batch_size=8, masking_check=0)
    first = _Interrupted(None)
    evaluate_checkpoints([checkpoint], engine, attacks={"noise": first}, out=tmp_path / "whole", **common)
    batches = first.calls
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        evaluate_checkpoints([checkpoint], engine, attacks={"noise": _Interrupted(3)}, out=out, **common)
    assert len(list((out / PARTIAL).glob("noise-*.pt"))) == 2 and not (out / "summary.json").exists()
    again = _Interrupted(None)
    evaluate_checkpoints([checkpoint], engine, attacks={"noise": again}, out=out, **common)
    assert again.calls == batches - 2 >= 1  # only the batches the first run had not finished
    assert (out / "distances.csv").read_text() == (tmp_path / "whole" / "distances.csv").read_text()
    assert not (out / PARTIAL).exists()


def test_partial_results_of_other_settings_are_not_mixed_in(checkpoint: Path, tmp_path: Path,
                                                            engine: Engine) -> None:
    common = dict(norm="l2", eps=[("1", 1.0)], batch_size=8, masking_check=0)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        evaluate_checkpoints([checkpoint], engine, attacks={"noise": _Interrupted(3)}, out=out, selection=Selection(40), **common)
    with pytest.raises(LipcliError, match="partial results of an interrupted run of other settings"):
        evaluate_checkpoints([checkpoint], engine, attacks={"noise": _Interrupted(None)}, out=out, selection=Selection(32), **common)
    fresh = _Interrupted(None)
    evaluate_checkpoints([checkpoint], engine, attacks={"noise": fresh}, out=out, selection=Selection(32), overwrite=True, **common)
    assert fresh.calls >= 3  # nothing was taken from the other run's batches


GRID = """
[data]
dataset = "digits"
[model]
arch = "small-cnn"
options = { width = 8 }
[training]
epochs = 1
batch_size = 64
device = "cpu"
[evaluate]
norms = ["l2"]
limit = 16
attacks = { l2 = ["deepfool"] }
"""


def test_the_grid_trusts_results_not_markers(run: Callable[..., Any], tmp_path: Path, engine: Engine) -> None:
    """The reported case: ``lipcli curve RUN/last.pt --limit 10`` inside a grid replaced a 16-image curve while
    plan.json still said 16, and the grid called the run complete."""
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    grid = load_grid(path, tmp_path / "runs")
    assert [o.status for o in run_grid(grid, engine)] == ["done"]
    folder = Path(grid.runs[0].config.output.dir)
    assert pending_stages(grid.runs[0], grid.evaluation) == []
    refused = run("curve", folder / "last.pt", "--limit", 10, *FAST)
    one_line_error(refused, "images: 16 there, 10 now")
    assert pending_stages(grid.runs[0], grid.evaluation) == []
    assert run("curve", folder / "last.pt", "--limit", 10, "--overwrite", *FAST).exit_code == 0
    assert pending_stages(grid.runs[0], grid.evaluation) == ["curve-l2"]
    assert [o.status for o in run_grid(grid, engine)] == ["done"]
    assert json.loads((folder / "curve-l2" / "summary.json").read_text())["images"] == 16


# -- training folders -------------------------------------------------------------------------------------------

TRAIN = ["train", "--dataset", "digits", "--epochs", "1", "--set", "model.options={width=8}", "--device", "cpu",
         "--quiet"]


def test_train_refuses_a_folder_of_the_users_files(run: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.toml").write_text("[my]\nown = 1\n")
    (out / "metrics.jsonl").write_text('{"mine": true}\n')
    before = hashes(out)
    one_line_error(run(*TRAIN, "--out", out), "not a lipcli run folder")
    assert hashes(out) == before
    one_line_error(run(*TRAIN, "--out", ""), "empty path")


def test_two_trainings_never_share_a_folder(run: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with open(out / LOCK_FILE, "w") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        one_line_error(run(*TRAIN, "--out", out), "another lipcli process")
    assert not (out / "config.toml").exists()


def test_a_full_disk_keeps_the_last_checkpoint_and_the_run_resumes(run: Callable[..., Any], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    assert run(*TRAIN, "--out", out).exit_code == 0  # 1 epoch
    before = hashes(out)
    weights = torch.load(out / "last.pt", weights_only=True)["model"]
    real_save = torch.save

    def full_disk(payload: Any, handle: Any) -> None:  # the disk fills up while epoch 2 is written
        if payload.get("epoch") != 2:
            return real_save(payload, handle)
        handle.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    extended = run("train", "--resume", out, "--epochs", "2", "--quiet")
    one_line_error(extended, "No space left on device", "still holds epoch 1", "--resume")
    after = hashes(out)  # last.pt records the new plan of 2 epochs before training on; its state is epoch 1's
    kept = torch.load(out / "last.pt", weights_only=True)
    assert kept["epoch"] == 1 and all(torch.equal(kept["model"][k], v) for k, v in weights.items())
    assert after.get("best.pt") == before.get("best.pt")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(torch, "save", real_save)
    resumed = run("train", "--resume", out, "--epochs", "2", "--quiet", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2


def test_a_run_interrupted_in_its_first_epoch_says_so_and_starts_again(run: Callable[..., Any], tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from lipcli.training import trainer

    out = tmp_path / "run"

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(trainer._Run, "_epoch", interrupted)
        assert run(*TRAIN, "--out", out).exit_code == 130
    one_line_error(run("train", "--resume", out), "interrupted before its first epoch ended", "--out")
    again = run("train", "--config", out / "config.toml", "--out", out, "--quiet")
    assert again.exit_code == 0, again.output
    assert (out / "last.pt").is_file()


# -- bad inputs: one line, the right exit code ----------------------------------------------------------------------


def test_files_that_are_no_checkpoint(run: Callable[..., Any], tmp_path: Path) -> None:
    files = {"text.pt": b"hello\n", "data.json": b'{"model": 1}', "noise.pt": bytes(range(256)) * 8, "empty.pt": b""}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        line = one_line_error(run("curve", tmp_path / name, *FAST), "not a lipcli checkpoint")
        assert "weights_only" not in line


def test_weights_that_do_not_fit_name_the_keys_and_shapes(run: Callable[..., Any], checkpoint: Path,
                                                           tmp_path: Path) -> None:
    from lipcli.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(checkpoint)
    key = next(k for k, v in payload["model"].items() if v.ndim == 4)
    payload["model"][key] = payload["model"][key][:1]
    payload["model"]["extra.weight"] = torch.zeros(2)
    save_checkpoint(tmp_path / "bad.pt", payload)
    shape = list(payload["model"][key].shape)
    one_line_error(run("curve", tmp_path / "bad.pt", *FAST), key, f"[{', '.join(map(str, shape))}] in the file",
                   "unexpected extra.weight [2]")


@pytest.mark.parametrize("option, fragment", [
    ("min-norm.steps=1.5", "attack.min-norm.steps: expected an integer"),
    ("gradient.bisect_steps=1e9", "attack.gradient.bisect_steps: expected an integer"),
    ("cw.steps=abc", "attack.cw.steps: expected an integer"),
    ("deepfool.box=maybe", "attack.deepfool.box: expected true or false"),
    ("deepfool.overshoot=inf", "attack.deepfool.overshoot: expected a finite number"),
    ("deepfool.steps", "--attack-option 'deepfool.steps': expected ATTACK.KEY=VALUE"),
])
def test_attack_options_of_the_wrong_type(run: Callable[..., Any], checkpoint: Path, tmp_path: Path, option: str,
                                          fragment: str) -> None:
    attack = option.split(".")[0]
    result = run("attack", checkpoint, "-a", attack, "-O", option, "--out", tmp_path / "x", "--device", "cpu")
    one_line_error(result, fragment)
    assert not (tmp_path / "x").exists()


def test_model_and_defence_options_are_typed_like_attack_options(run: Callable[..., Any], tmp_path: Path) -> None:
    one_line_error(run(*TRAIN, "--set", "model.options={width=1.5}", "--out", tmp_path / "a"),
                   "model.options.width: expected an integer")
    one_line_error(run(*TRAIN, "--defence", "j2", "--set", "defence.options.at-l2.eps='big'", "--out", tmp_path / "b"),
                   "defence.options.at-l2.eps: expected a number")


def test_non_finite_numbers_are_refused(run: Callable[..., Any], tmp_path: Path) -> None:
    one_line_error(run(*TRAIN, "--lr", "inf", "--out", tmp_path / "a"), "training.lr", "finite")
    one_line_error(run(*TRAIN, "--set", "training.lr=nan", "--out", tmp_path / "b"), "training.lr", "finite")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_batch_larger_than_the_training_set_is_warned_about(run: Callable[..., Any], tmp_path: Path) -> None:
    with pytest.warns(LipcliWarning, match=r"5000 is more than the \d+ training images"):
        result = run(*TRAIN, "--batch-size", "5000", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output


def test_images_of_another_shape_than_the_model_are_refused(run: Callable[..., Any], tmp_path: Path) -> None:
    from data_files import write_idx, write_mnist_folder

    write_mnist_folder(tmp_path / "mnist28", seed=0, n_train=40, n_test=8)
    trained = run("train", "--dataset", "mnist", "--data-dir", tmp_path / "mnist28", "--epochs", "1",
                  "--set", "model.options={width=8}", "--set", "data.validation=0", "--device", "cpu", "--quiet",
                  "--out", tmp_path / "run")
    assert trained.exit_code == 0, trained.output
    rng = torch.Generator().manual_seed(0)
    small = tmp_path / "mnist14"
    for name, count in (("train", 40), ("t10k", 8)):
        images = torch.randint(0, 256, (count, 14, 14), generator=rng, dtype=torch.uint8).numpy()
        write_idx(small / f"{name}-images-idx3-ubyte", images)
        write_idx(small / f"{name}-labels-idx1-ubyte", (torch.arange(count) % 10).to(torch.uint8).numpy())
    one_line_error(run("curve", tmp_path / "run" / "last.pt", "--data-dir", small, *FAST),
                   "[1, 14, 14]", "[1, 28, 28]")


def test_a_data_dir_for_a_data_set_without_files_is_warned_about(run: Callable[..., Any], checkpoint: Path,
                                                                 tmp_path: Path) -> None:
    with pytest.warns(LipcliWarning, match="'digits' reads no files"):
        result = run("curve", checkpoint, "--limit", 8, "--data-dir", tmp_path, "--out", tmp_path / "c", *FAST)
    assert result.exit_code == 0, result.output


def test_plugin_names_in_the_environment_are_checked() -> None:
    with pytest.warns(UserWarning, match="LIPCLI_PLUGINS names 'nonexistent', which is no installed plugin"):
        PluginHost(environ={"LIPCLI_PLUGINS": "nonexistent"})
    blocked = PluginHost(environ={"LIPCLI_BLOCK_PLUGINS": "lipcli-attacks"})
    with pytest.raises(UnknownNameError, match="lipcli-attacks \\(blocked by LIPCLI_BLOCK_PLUGINS\\)"):
        blocked.registry("attack").get("min-norm")


@pytest.mark.parametrize("args", [["curve"], ["curve", "x.pt", "--norm", "l3"], ["bogus"], ["train", "--epochs", "x"]])
def test_usage_errors_are_one_line_and_a_hint(args: list[str]) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "lipcli", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Error: ") and lines[1].startswith("Try '"), done.stderr
    assert "╭" not in done.stderr and "Traceback" not in done.stderr


def test_a_killed_curve_resumes_in_a_new_process(checkpoint: Path, tmp_path: Path) -> None:
    """SIGKILL (no cleanup at all) once some batches are written; the same command then resumes them and gives
    the distances of an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "lipcli", "curve", str(checkpoint), "--limit", "80", "--batch-size", "8",
               "-a", "min-norm", "--masking-check", "0", "--device", "cpu"]
    whole = subprocess.run([*command, "--out", str(tmp_path / "whole"), "--quiet"], capture_output=True, text=True,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "cut"
    process = subprocess.Popen([*command, "--out", str(out), "--quiet"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list((out / PARTIAL).glob("*.pt"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(list((out / PARTIAL).glob("*.pt")))
    assert written >= 2 and not (out / "summary.json").exists()
    again = subprocess.run(command + ["--out", str(out)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"resumed {written} attack batches" in again.stdout + again.stderr
    assert (out / "distances.csv").read_text() == (tmp_path / "whole" / "distances.csv").read_text()


# -- damaged data and unsafe files, through the CLI -----------------------------------------------------------------


def _corrupt(folder: Path, damage: str) -> None:
    """An MNIST folder (train 20, test 8 images) with one kind of damage."""
    import gzip

    from data_files import write_idx, write_mnist_folder

    write_mnist_folder(folder, seed=0, n_train=20, n_test=8, gz=True)
    images = folder / "train-images-idx3-ubyte.gz"
    if damage == "truncated gz":
        images.write_bytes(images.read_bytes()[: len(images.read_bytes()) // 2])
    elif damage == "crc":
        data = bytearray(images.read_bytes())
        data[-8] ^= 0xFF  # the gzip trailer's CRC-32
        images.write_bytes(bytes(data))
    elif damage == "truncated idx":
        raw = gzip.decompress(images.read_bytes())
        images.write_bytes(gzip.compress(raw[: len(raw) - 100]))
    elif damage == "label 200":
        labels = (torch.arange(20) % 10).to(torch.uint8)
        labels[3] = 200
        write_idx(folder / "train-labels-idx1-ubyte.gz", labels.numpy(), gz=True)
    elif damage == "count mismatch":
        write_idx(folder / "train-labels-idx1-ubyte.gz", (torch.arange(19) % 10).to(torch.uint8).numpy(), gz=True)


@pytest.mark.parametrize("damage", ["truncated gz", "crc", "truncated idx", "label 200", "count mismatch"])
def test_damaged_data_is_one_line_naming_the_file(run: Callable[..., Any], tmp_path: Path, damage: str) -> None:
    _corrupt(tmp_path / "mnist", damage)
    name = "labels" if damage in ("label 200", "count mismatch") else "images"
    result = run("train", "--dataset", "mnist", "--data-dir", tmp_path / "mnist", "--out", tmp_path / "run",
                 "--device", "cpu", "--quiet")
    one_line_error(result, "mnist")
    assert name in result.output or "train-" in result.output, result.output
    assert not (tmp_path / "run" / "last.pt").exists()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_checkpoint_is_refused_by_every_command(run: Callable[..., Any], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "lipcli-checkpoint", "format_version": 1, "model": _Payload(marker)}, evil)
    for command in (["curve", evil, *FAST], ["stats", evil, "--device", "cpu"], ["train", "--resume", evil.parent],
                    ["robust", evil, "--norm", "l2", "--eps", "0.1", "--device", "cpu"]):
        if command[0] == "train":
            (tmp_path / "last.pt").write_bytes(evil.read_bytes())
        one_line_error(run(*command), "refused")
        assert not marker.exists()
