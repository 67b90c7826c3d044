"""Experiment grids (expansion, skip, resume, failures) and reports built from run folders."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from lipcli.checkpoint import load_checkpoint, save_checkpoint
from lipcli.config import dumps, resolve
from lipcli.config.toml_reader import load_toml
from lipcli.errors import ConfigError
from lipcli.evaluation.attack_set import AttackResult, RobustnessResult
from lipcli.evaluation.results import write_distances
from lipcli.experiments.grid import load_grid
from lipcli.experiments.grid_runner import (
    configuration_conflict,
    pending_stages,
    run_grid,
)
from lipcli.experiments.report import collect, csv_text, latex, markdown, write_report
from lipcli.plugin_host import PluginHost
from lipcli.training import trainer
from lipcli.engine import Engine

BASE = """
[data]
dataset = "synthetic"
options = { train_size = 128, test_size = 32, channels = 1, size = 8, num_classes = 4, noise = 0.1 }
[model]
arch = "small-cnn"
options = { width = 4 }
[training]
epochs = 2
batch_size = 32
lr = 0.05
device = "cpu"
"""
EVALUATE = """
[evaluate]
norms = ["l2"]
limit = 8
stats = true
attack_options = { min-norm = { steps = 3, targets = 0, start_steps = 5 } }
"""


def experiment(tmp_path: Path, grid: str, evaluate: str = EVALUATE, base: str = BASE, name: str = "exp") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(base + textwrap.dedent(grid) + evaluate)
    return path


def test_grid_expands_every_combination_in_file_order(tmp_path: Path) -> None:
    path = experiment(tmp_path, """
        [grid]
        defence.name = ["j0", "j2-lip"]
        "training.seed" = [0, 1]
        model.options = [{ width = 4 }, { width = 8 }]
    """)
    grid = load_grid(path, tmp_path / "runs")
    assert len(grid.runs) == 8
    first, last = grid.runs[0], grid.runs[-1]
    assert first.settings == {"defence.name": "j0", "training.seed": 0, "model.options": {"width": 4}}
    assert first.name == "synthetic-small-cnn-j0-width4-s0"
    assert last.name == "synthetic-small-cnn-j2-lip-width8-s1"
    assert last.config.defence.name == "j2-lip" and last.config.training.seed == 1
    assert last.config.model.options == {"width": 8} and last.config.training.epochs == 2
    assert Path(last.config.output.dir) == tmp_path / "runs" / last.name
    assert grid.evaluation.norms == ["l2"] and grid.evaluation.limit == 8
    assert grid.evaluation.eps_for("linf") == [("8/255", 8 / 255)]
    assert len({r.name for r in grid.runs}) == 8


def test_a_grid_value_can_set_several_keys_at_once(tmp_path: Path) -> None:
    """Architectures with options of their own: one axis of whole ``model`` tables."""
    grid = load_grid(experiment(tmp_path, """
        [grid]
        model = [{ arch = "mlp", options = {} }, { arch = "small-cnn", options = { width = 6 } }]
    """, base=BASE.replace("options = { width = 4 }\n", "")), tmp_path / "runs")
    assert [r.name for r in grid.runs] == ["synthetic-mlp-j0-s0", "synthetic-small-cnn-j0-width6-s0"]
    assert grid.runs[1].config.model.options == {"width": 6} and grid.runs[0].config.model.arch == "mlp"


@pytest.mark.parametrize(("grid", "evaluate", "message"), [
    ('[grid]\n"training.lrr" = [0.1]\n', "", "training.lr"),
    ("[grid]\ntraining.lr = 0.1\n", "", "grid.training.lr: expected a non-empty list"),
    ('[grid]\n"training.lr" = [0.1, "fast"]\n', "", "training.lr: expected a number"),
    ('[grid]\n"data.train_limit" = [64, 64]\n', "", "both get the folder name"),
    ("", "[evaluate]\nnorm = ['l2']\n", "evaluate.norm'. Did you mean 'evaluate.norms'"),
    ("", "[evaluate]\nnorms = ['l3']\n", "evaluate.norms"),
    ("", "[evaluate]\neps = { linf = '8/0' }\n", "evaluate.eps.linf"),
    ("", "[evaluate]\ncheckpoint = 'first'\n", "evaluate.checkpoint"),
    ("", "[evaluate]\ncheckpoint = 'bets'\n", "exp.toml: evaluate.checkpoint: expected 'last' or 'best', got 'bets'.*"
                                              "Did you mean 'best'"),
    ("", "[evaluate]\nlimit = 0\n", "exp.toml: evaluate.limit: must be at least 1, got 0"),
    ("", "[evaluate]\nattacks = { l2 = ['pgd-l2', 3] }\n", "evaluate.attacks.l2[1]: expected a string, got 3"),
    ('[output]\ndir = "runs/mine"\n[grid]\n"training.lr" = [0.1]\n', "", "output.dir: a grid gives each run its own"),
    ('[grid]\n"output.dir" = ["a", "b"]\n', "", "exp.toml: output.dir: a grid gives each run its own folder"),
])
def test_grid_errors_name_the_key(tmp_path: Path, grid: str, evaluate: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_grid(experiment(tmp_path, grid, evaluate), tmp_path / "runs")


def test_a_finished_grid_is_skipped_and_an_interrupted_run_resumes(tmp_path: Path, engine: Engine,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = experiment(tmp_path, '[grid]\n"defence.name" = ["j0", "j2"]\n')
    grid = load_grid(path, tmp_path / "runs")
    real_epoch = trainer._Run._epoch

    def interrupted(self: Any, epoch: int, *args: Any) -> Any:
        if epoch == 2 and self.config.defence.name == "j0":
            raise RuntimeError("simulated crash in epoch 2")
        return real_epoch(self, epoch, *args)

    monkeypatch.setattr(trainer._Run, "_epoch", interrupted)
    outcomes = run_grid(grid, engine)
    assert [o.status for o in outcomes] == ["failed", "done"]  # the failure does not stop the grid
    assert "simulated crash" in outcomes[0].message
    crashed = Path(grid.runs[0].config.output.dir)
    assert (crashed / "error.txt").read_text().count("simulated crash")
    assert pending_stages(grid.runs[0], grid.evaluation) == ["resume", "curve-l2", "stats"]
    assert pending_stages(grid.runs[1], grid.evaluation) == []

    monkeypatch.setattr(trainer._Run, "_epoch", real_epoch)
    finished = (Path(grid.runs[1].config.output.dir) / "stats" / "stats.json").stat().st_mtime_ns
    outcomes = run_grid(load_grid(path, tmp_path / "runs"), engine)
    assert [(o.status, o.stages) for o in outcomes] == [("done", ["resume", "curve-l2", "stats"]), ("skipped", [])]
    assert [json.loads(line)["epoch"] for line in (crashed / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (Path(grid.runs[1].config.output.dir) / "stats" / "stats.json").stat().st_mtime_ns == finished
    summary = json.loads((crashed / "curve-l2" / "summary.json").read_text())
    assert summary["images"] == 8 and summary["checkpoint"].endswith("last.pt")

    # a new norm in [evaluate] runs only the missing stage
    grid = load_grid(experiment(tmp_path, '[grid]\n"defence.name" = ["j0", "j2"]\n',
                                EVALUATE.replace('["l2"]', '["l2", "linf"]')), tmp_path / "runs")
    assert [pending_stages(r, grid.evaluation) for r in grid.runs] == [["curve-linf"], ["curve-linf"]]


def test_a_changed_configuration_is_refused_not_mixed(tmp_path: Path, engine: Engine) -> None:
    path = experiment(tmp_path, '[grid]\n"training.seed" = [0]\n', "[evaluate]\nnorms = []\nstats = false\n")
    assert [o.status for o in run_grid(load_grid(path, tmp_path / "runs"), engine)] == ["done"]
    path.write_text(path.read_text().replace("lr = 0.05", "lr = 0.02"))
    grid = load_grid(path, tmp_path / "runs")
    assert "training.lr" in configuration_conflict(grid.runs[0])
    (outcome,) = run_grid(grid, engine)
    assert outcome.status == "failed" and "training.lr" in outcome.message


def test_a_run_stored_before_held_out_validation_compares_as_it_was_trained(tmp_path: Path) -> None:
    """Its config.toml lacks the keys added since: it trained on every image with the multistep schedule, so a
    grid holding images out differs from it (by data.validation alone), and one holding none does not."""
    evaluate = "[evaluate]\nnorms = []\nstats = false\n"
    grid = load_grid(experiment(tmp_path, '[grid]\n"training.seed" = [0]\n', evaluate), tmp_path / "runs")
    folder = Path(grid.runs[0].config.output.dir)
    folder.mkdir(parents=True)
    tree = grid.runs[0].config.to_dict()
    for section, key in (("data", "validation"), ("data", "validation_seed"), ("training", "lr_schedule"),
                         ("training", "warmup_epochs")):
        del tree[section][key]
    (folder / "config.toml").write_text(dumps(tree))
    assert configuration_conflict(grid.runs[0]) == (
        "it holds a run with another configuration (data.validation, training.lr_schedule differ)"
    )
    everything = BASE.replace('dataset = "synthetic"', 'dataset = "synthetic"\nvalidation = 0').replace(
        "[training]", '[training]\nlr_schedule = "multistep"'
    )
    grid = load_grid(experiment(tmp_path, '[grid]\n"training.seed" = [0]\n', evaluate, base=everything), tmp_path / "runs")
    assert configuration_conflict(grid.runs[0]) is None


def test_run_command_dry_run_and_exit_code_on_failure(run: Callable[..., Any], tmp_path: Path) -> None:
    path = experiment(tmp_path, '[grid]\n"model.options" = [{ width = 4 }, { width = -1 }]\n',
                      "[evaluate]\nnorms = []\nstats = false\n")
    result = run("run", path, "--out", tmp_path / "runs", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [r["needs"] for r in listed] == [["train"], ["train"]]
    result = run("run", path, "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 1
    assert "1 complete, 1 failed" in result.stdout and "width" in result.stdout


def test_run_set_overrides_every_run(run: Callable[..., Any], tmp_path: Path) -> None:
    """``lipcli run --set`` is the top layer of every run's configuration, as in ``lipcli train``."""
    path = experiment(tmp_path, '[grid]\n"training.lr" = [0.05, 0.1]\n', "[evaluate]\nnorms = []\nstats = false\n")
    runs = tmp_path / "runs"
    result = run("run", path, "--out", runs, "--set", "training.max_steps=2", "--set", "training.seed=3",
                 "--quiet", "--json")
    assert result.exit_code == 0, result.output
    outcomes = json.loads(result.stdout)
    assert [o["status"] for o in outcomes] == ["done", "done"]
    folders = sorted(p for p in runs.iterdir() if p.is_dir())
    assert [p.name for p in folders] == ["synthetic-small-cnn-j0-lr0.05-s3", "synthetic-small-cnn-j0-lr0.1-s3"]
    for folder in folders:  # the overrides reached each run's config.toml, the grid's values kept
        written = load_toml(folder / "config.toml")
        assert written["training"]["max_steps"] == 2 and written["training"]["seed"] == 3
        assert written["training"]["epochs"] == 2 and written["data"]["dataset"] == "synthetic"
    assert sorted(load_toml(f / "config.toml")["training"]["lr"] for f in folders) == [0.05, 0.1]
    result = run("run", path, "--out", runs, "--set", "training.max_steps=2", "--set", "training.seed=3",
                 "--dry-run", "--json")
    assert [r["needs"] for r in json.loads(result.stdout)] == [[], []]  # the same runs, found finished
    result = run("run", path, "--out", runs, "--set", "training.lr=0.2", "--dry-run")
    assert result.exit_code == 2 and "the grid varies training.lr" in result.output
    result = run("run", path, "--out", runs, "--set", "output.dir=x", "--dry-run")
    assert result.exit_code == 2 and "--out" in result.output
    best = experiment(tmp_path, '[grid]\n"training.lr" = [0.05]\n', "[evaluate]\ncheckpoint = 'best'\n", name="best")
    result = run("run", best, "--out", runs, "--set", "data.validation=0", "--dry-run")
    assert result.exit_code == 2 and "'best' is chosen on held-out images" in result.output


def fake_run(root: Path, dataset: str, defence: str, seed: int, l2: list[float] | None, linf: list[float] | None,
             stats: dict[str, float] | None) -> None:
    """A run folder as lipcli writes it, with chosen results and no training."""
    config = resolve(None, {}, [f"data.dataset={dataset!r}", f"defence.name={defence!r}", f"training.seed={seed}"])
    folder = root / f"{dataset}-{defence}-{seed}"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(dumps(config.to_dict()))
    for norm, distances in (("l2", l2), ("linf", linf)):
        if distances is not None:
            values = torch.tensor(distances, dtype=torch.float64)
            labels = torch.zeros(len(distances), dtype=torch.int64)
            predictions = torch.where(values == 0, 1, 0)
            result = RobustnessResult(norm, labels, predictions, [AttackResult("min-norm", values, 1.0, 10)])
            write_distances(folder / f"curve-{norm}" / "distances.csv", result)
    if stats is not None:
        (folder / "stats").mkdir()
        (folder / "stats" / "stats.json").write_text(json.dumps({
            "clean_error": stats["error"], "grad_loss_l2": {"max": stats["l2"]}, "grad_loss_l1": {"max": stats["l1"]},
            "jac_f_2inf_max": stats["f2"], "jac_f_11_max": stats["f1"],
        }))


def test_report_tables_from_run_folders(tmp_path: Path) -> None:
    inf = math.inf
    fake_run(tmp_path, "digits", "j0", 0, [0.0, 0.05, 0.2, 2.0], [0.0, 0.01, 0.05, inf],
             {"error": 0.25, "l2": 10.0, "l1": 50.0, "f2": 2.0, "f1": 0.5})
    fake_run(tmp_path, "digits", "j0", 1, [0.0, 0.15, 0.3, 0.4], None,
             {"error": 0.25, "l2": 12.0, "l1": 70.0, "f2": 2.0, "f1": 0.7})
    fake_run(tmp_path, "digits", "j2-lip", 0, [0.5, 0.6, 0.7, inf], [0.02, 0.03, inf, inf],
             {"error": 0.0, "l2": 5.0, "l1": 80.0, "f2": 1.0, "f1": 0.6})
    fake_run(tmp_path, "synthetic", "j0", 0, None, None, {"error": 0.1, "l2": 1.0, "l1": 2.0, "f2": 0.3, "f1": 0.1})
    report = collect([tmp_path])
    assert report.folders == 4 and list(report.rows) == ["digits", "synthetic"]
    j0, lip = report.rows["digits"]
    assert j0.seeds == [0, 1] and lip.seeds == [0]
    # j0, seed 0: error 1/4, median 0.05, err@0.1 = 2/4, err@1.5 = 3/4; seed 1: 1/4, 0.15, 1/4, 4/4
    assert j0.value("error") == 0.25 and j0.value("l2_median") == pytest.approx(0.1)
    assert j0.value("l2_err_0.1") == pytest.approx(0.375) and j0.value("l2_err_1.5") == pytest.approx(0.875)
    assert j0.value("linf_median") == 0.01 and j0.value("linf_err_8/255") == 0.5  # seed 0 only
    assert j0.value("grad_loss_l2") == 11.0 and lip.value("grad_loss_l2") == 5.0
    assert lip.value("error") == 0.0 and lip.value("l2_median") == 0.6 and lip.value("linf_median") == 0.03

    md = markdown(report)
    # best per column in bold (smaller errors and norms, larger medians); a column where all tie: none
    # over seeds: mean ± sample std (n), e.g. l2 median 0.05, 0.15 -> 0.1 ± 0.0707 (2); one seed: the value alone
    assert ("| small-cnn | j0 | 2 | 4 | 25.00 ± 0.00 (2) | 0.1 ± 0.0707 (2) | 37.50 ± 17.68 (2) | 87.50 ± 17.68 (2) "
            "| 0.01 | 50.00 |") in md
    assert "| small-cnn | j2-lip | 1 | 4 | **0.00** | **0.6** | **0.00** | **75.00** | **0.03** | 50.00 |" in md
    assert "| small-cnn | j0 | 2 |  | 11 ± 1.41 (2) | 2 ± 0 (2) | **60 ± 14.1 (2)** | 0.6 ± 0.141 (2) |" in md
    assert "| small-cnn | j2-lip | 1 |  | **5** | **1** | 80 | 0.6 |" in md
    assert "### synthetic: robustness" in md
    assert "| small-cnn | j0 | 1 |  | 10.00 |  |  |  |  |  |" in md  # no curves: blanks
    tex = latex(report)
    assert "\\textbf{0.6}" in tex and "\\% err" in tex and "j2-lip" in tex
    rows = csv_text(report).splitlines()
    assert rows[0].startswith("dataset,model,defence,settings,seeds,robustness_images") and len(rows) == 4
    header = rows[0].split(",")
    assert rows[3].split(",")[header.index("error"):header.index("l2_median") + 1] == ["0.1", "", "1", ""]
    written = write_report(report, tmp_path / "report")
    assert {p.name for p in written} >= {"report.md", "report.csv", "report.tex", "digits-l2.png", "digits-linf.svg"}
    assert not (tmp_path / "report" / "synthetic-l2.png").exists()  # no curves: no figure


def test_runs_differing_in_more_than_the_seed_are_separate_rows(tmp_path: Path) -> None:
    """Two learning rates are two rows, each named by its setting; seeds of one configuration average."""
    from lipcli.experiments import report as report_module

    for lr, seed, distance in ((0.1, 0, 0.2), (0.1, 1, 0.4), (0.05, 0, 0.9)):
        config = resolve(None, {}, [f"training.lr={lr}", f"training.seed={seed}", "data.dataset='digits'"])
        folder = tmp_path / f"lr{lr}-s{seed}"
        folder.mkdir()
        (folder / "config.toml").write_text(dumps(config.to_dict()))
        values = torch.tensor([distance, distance], dtype=torch.float64)
        result = RobustnessResult("l2", torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64),
                                  [AttackResult("min-norm", values, 1.0, 1)])
        write_distances(folder / "curve-l2" / "distances.csv", result)
    rows = report_module.collect([tmp_path]).rows["digits"]
    assert sorted((r.settings, r.seeds, r.value("l2_median")) for r in rows) == [
        ("training.lr=0.05", [0], 0.9), ("training.lr=0.1", [0, 1], pytest.approx(0.3))]
    assert "| small-cnn | j0 | training.lr=0.1 | 2 | 2 |" in report_module.markdown(report_module.collect([tmp_path]))


def test_report_command(run: Callable[..., Any], tmp_path: Path) -> None:
    fake_run(tmp_path / "runs", "digits", "j0", 0, [0.0, 0.1], None, None)
    result = run("report", tmp_path / "runs", "--json", "--quiet")  # --quiet accepted, as by every command
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["digits"][0]["l2_median"] == 0.0
    assert (tmp_path / "runs" / "report" / "report.md").is_file()
    (tmp_path / "empty").mkdir()
    result = run("report", tmp_path / "empty")
    assert result.exit_code == 1 and "no run folders" in result.output


def test_training_a_grid_file_directly_says_to_run_it(run: Callable[..., Any], tmp_path: Path) -> None:
    path = experiment(tmp_path, '[grid]\n"training.seed" = [0, 1]\n')
    result = run("train", "-c", path)
    assert result.exit_code == 2 and "lipcli run" in result.output


@pytest.mark.parametrize(("grid", "evaluate", "message"), [
    ('[grid]\n"defence.name" = ["j0", "j2-lipp"]\n', "", "run synthetic-small-cnn-j2-lipp-s0: unknown"),
    ('[grid]\n"model.arch" = ["resnet43"]\n', "", "Did you mean 'resnet34'"),
    ("", "[evaluate]\nattacks = { l2 = ['pgd-l3'] }\n", "Did you mean 'pgd-l2'"),
    ("", "[evaluate]\nattack_options = { cw = { steps = 3 } }\n", "evaluate.attack_options.cw"),
])
def test_components_are_checked_before_anything_runs(tmp_path: Path, host: PluginHost, grid: str, evaluate: str,
                                                     message: str) -> None:
    from lipcli.errors import LipcliError
    from lipcli.experiments.grid_runner import check_components

    with pytest.raises(LipcliError, match=message):
        check_components(load_grid(experiment(tmp_path, grid, evaluate), tmp_path / "runs"), host)


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parents[1] / "examples").glob("*.toml")))
def test_every_example_expands_and_names_real_components(name: str, host: PluginHost) -> None:
    from lipcli.experiments.grid_runner import check_components

    path = Path(__file__).parents[1] / "examples" / name
    assert path.read_text().lstrip().startswith("#")  # each example says what it is and how long it takes
    check_components(load_grid(path), host)


def finished_run(tmp_path: Path, engine: Engine, evaluate: str = EVALUATE) -> tuple[Path, Any]:
    path = experiment(tmp_path, '[grid]\n"training.seed" = [0]\n', evaluate)
    grid = load_grid(path, tmp_path / "runs")
    assert [o.status for o in run_grid(grid, engine)] == ["done"]
    return path, grid


def test_an_extended_run_is_evaluated_again_and_an_unfinished_extension_resumed(tmp_path: Path, engine: Engine) -> None:
    """Evaluations belong to the checkpoint they measured (its step, in plan.json), not to the marker that
    training once finished: after ``lipcli train --resume RUN --epochs N`` they are stale. (Multistep: an
    extended cosine run is not the longer run, and its grid would refuse it.)"""
    multistep = BASE.replace("[training]", '[training]\nlr_schedule = "multistep"')
    path = experiment(tmp_path, '[grid]\n"training.seed" = [0]\n', base=multistep)
    grid = load_grid(path, tmp_path / "runs")
    assert [o.status for o in run_grid(grid, engine)] == ["done"]
    folder = Path(grid.runs[0].config.output.dir)
    assert json.loads((folder / "curve-l2" / "plan.json").read_text())["checkpoint_step"] == 2 * 4  # 2 epochs of 4
    longer = experiment(tmp_path, '[grid]\n"training.seed" = [0]\n', base=multistep.replace("epochs = 2", "epochs = 3"),
                        name="longer")
    longer_grid = load_grid(longer, tmp_path / "runs")
    trainer.resume(folder, engine, epochs=3)  # the user extends the run, then the grid file
    assert pending_stages(longer_grid.runs[0], longer_grid.evaluation) == ["curve-l2", "stats"]
    outcomes = run_grid(longer_grid, engine)
    assert [(o.status, o.stages) for o in outcomes] == [("done", ["curve-l2", "stats"])]
    assert json.loads((folder / "curve-l2" / "plan.json").read_text())["checkpoint_step"] == 3 * 4
    # an extension cut short: last.pt is an epoch short of the configuration, trained.json notwithstanding
    payload = load_checkpoint(folder / "last.pt")
    payload["config"]["training"]["epochs"] = 4
    save_checkpoint(folder / "last.pt", payload)
    (folder / "config.toml").write_text(dumps(payload["config"]))
    cut_short = load_grid(experiment(tmp_path, '[grid]\n"training.seed" = [0]\n', name="cut",
                                     base=multistep.replace("epochs = 2", "epochs = 4")), tmp_path / "runs")
    assert pending_stages(cut_short.runs[0], cut_short.evaluation) == ["resume", "curve-l2", "stats"]


def test_the_report_marks_results_measured_on_a_best_pt_chosen_on_the_test_error(tmp_path: Path, engine: Engine) -> None:
    """An older lipcli chose best.pt on the test error: a grid's results measured on it are a row of their own,
    marked in its settings, never averaged with results of a model chosen otherwise."""
    _, grid = finished_run(tmp_path, engine)
    folder = Path(grid.runs[0].config.output.dir)
    twin = folder.parent / "old-run"
    twin.mkdir()
    for name in ("config.toml", "curve-l2", "stats"):
        source = folder / name
        if source.is_dir():
            (twin / name).mkdir()
            for item in source.iterdir():
                (twin / name / item.name).write_bytes(item.read_bytes())
        else:
            (twin / name).write_bytes(source.read_bytes())
    tree = load_toml(twin / "config.toml")
    tree["data"]["validation"] = 0  # as an older run's config.toml reads
    tree["training"]["seed"] = 1
    (twin / "config.toml").write_text(dumps(tree))
    plan = json.loads((twin / "curve-l2" / "plan.json").read_text())
    (twin / "curve-l2" / "plan.json").write_text(json.dumps({**plan, "checkpoint": "best"}))
    rows = collect([folder.parent]).rows["synthetic"]
    assert len(rows) == 2
    marked = [r for r in rows if "best.pt chosen on the test error" in r.settings]
    assert len(marked) == 1 and marked[0].seeds == [1]


def test_what_counts_as_done(tmp_path: Path, engine: Engine) -> None:
    path, grid = finished_run(tmp_path, engine)
    run, folder = grid.runs[0], Path(grid.runs[0].config.output.dir)
    assert json.loads((folder / "curve-l2" / "plan.json").read_text())["limit"] == 8
    # a changed [evaluate] reruns exactly the stages it changes
    changed = load_grid(experiment(tmp_path, '[grid]\n"training.seed" = [0]\n', EVALUATE.replace("limit = 8", "limit = 9")),
                        tmp_path / "runs")
    assert pending_stages(changed.runs[0], changed.evaluation) == ["curve-l2", "stats"]
    other_attack = EVALUATE.replace("norms", 'attacks = { l2 = ["min-norm", "gradient"] }\nnorms')
    changed = load_grid(experiment(tmp_path, '[grid]\n"training.seed" = [0]\n', other_attack), tmp_path / "runs")
    assert pending_stages(changed.runs[0], changed.evaluation) == ["curve-l2"]
    # where the data lives, or the device, changes no result: no conflict, nothing to do
    moved = experiment(tmp_path, '[grid]\n"training.seed" = [0]\n',
                       base=BASE.replace('dataset = "synthetic"', 'dataset = "synthetic"\ndata_dir = "/elsewhere"')
                       .replace('device = "cpu"', 'device = "cuda:7"'), name="moved")
    moved_grid = load_grid(moved, tmp_path / "runs")
    assert [o.status for o in run_grid(moved_grid, engine)] == ["skipped"]  # no CUDA needed to skip
    # training again from scratch (checkpoints and marker removed) makes every evaluation stale
    for name in ("trained.json", "last.pt"):
        (folder / name).unlink()
    assert pending_stages(run, grid.evaluation) == ["train", "curve-l2", "stats"]
    # best.pt left by a crash before the first last.pt does not block the new start
    outcomes = run_grid(load_grid(path, tmp_path / "runs"), engine)
    assert [o.status for o in outcomes] == ["done"] and (folder / "last.pt").is_file(), outcomes[0].message
    assert not (folder / "error.txt").exists()


def test_dry_run_lists_an_unreadable_run_folder(run: Callable[..., Any], tmp_path: Path) -> None:
    path = experiment(tmp_path, '[grid]\n"training.seed" = [0, 1]\n')
    folder = tmp_path / "runs" / "synthetic-small-cnn-j0-s1"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text("this is = not [toml")
    result = run("run", path, "--out", tmp_path / "runs", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert [r["conflict"] is not None for r in json.loads(result.stdout)] == [False, True]


def test_two_grid_values_that_make_one_configuration_are_refused(tmp_path: Path) -> None:
    """model.options merge with the base's: {} and { width = 4 } are the same run under two names."""
    with pytest.raises(ConfigError, match="same configuration"):
        load_grid(experiment(tmp_path, '[grid]\n"model.options" = [{}, { width = 4 }]\n'), tmp_path / "runs")


def test_report_counts_a_folder_given_twice_once(tmp_path: Path) -> None:
    fake_run(tmp_path / "runs", "digits", "j0", 0, [0.0, 0.1], None, None)
    report = collect([tmp_path / "runs", (tmp_path / "runs").resolve(), tmp_path / "runs" / ".."])
    assert report.folders == 1 and report.rows["digits"][0].seeds == [0]
