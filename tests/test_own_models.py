"""Models lipcli did not train: exported programs, TorchScript files and ``--model`` factories with weights give
the distances of the same network as a lipcli checkpoint; hostile files are refused before anything runs; a
normalisation given with ``--normalize`` is the same as one inside the model."""

from __future__ import annotations

import os
import pickle
import textwrap
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

import lipcli
from lipcli.errors import CheckpointError
from lipcli.models.external import ExportedModel, model_format, read_state_dict

CURVE = ["-a", "deepfool", "-O", "deepfool.steps=20", "--masking-check", "0", "--limit", "24", "--device", "cpu",
         "--quiet"]
DIGITS = ["--dataset", "digits"]


def distances(folder: Path) -> list[float]:
    return [float(line.split(",")[-1]) for line in (folder / "distances.csv").read_text().splitlines()[1:]]


def one_line(result: Any, *fragments: str) -> str:
    """The error of a failed command: exit code 1 or 2, one line naming ``fragments``, no traceback."""
    assert result.exit_code in (1, 2), result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith(("Usage", "Try"))]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def formats(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The checkpoint's network as an exported program, a TorchScript file, and a factory file with its weights
    saved apart (the factory's own weights are zeros, so only --weights can make it the same network)."""
    folder = tmp_path_factory.mktemp("formats")
    model = lipcli.load_model(checkpoint)
    example = torch.rand(4, 1, 8, 8)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, folder / "model.pt2")
    torch.export.save(torch.export.export(model, (example,)), folder / "fixed.pt2")  # a batch of 4 only
    torch.jit.trace(model, example).save(str(folder / "model.ts"))
    torch.save(model.state_dict(), folder / "weights.pt")
    (folder / "factory.py").write_text(textwrap.dedent(f"""
        import torch
        import lipcli

        def make():
            model = lipcli.load_model({str(checkpoint)!r})
            with torch.no_grad():
                for tensor in model.state_dict().values():
                    tensor.zero_()
            return model
    """))
    return {"checkpoint": checkpoint, "export": folder / "model.pt2", "fixed": folder / "fixed.pt2",
            "torchscript": folder / "model.ts", "weights": folder / "weights.pt", "factory": folder / "factory.py"}


def test_formats_are_told_apart_without_loading(formats: dict[str, Path], tmp_path: Path) -> None:
    found = [model_format(formats[k]) for k in ("checkpoint", "export", "fixed", "torchscript", "weights")]
    assert found == ["lipcli", "torch.export", "torch.export", "torchscript", "lipcli"]
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(CheckpointError, match="not a lipcli checkpoint, an exported program .* or a TorchScript"):
        model_format(tmp_path / "x.json")


def test_every_format_gives_the_checkpoints_distances(run: Callable[..., Any], formats: dict[str, Path],
                                                     tmp_path: Path) -> None:
    reference = run("curve", formats["checkpoint"], *CURVE, "--out", tmp_path / "ref")
    assert reference.exit_code == 0, reference.output
    expected = distances(tmp_path / "ref")
    assert sum(0 < d < float("inf") for d in expected) >= 8  # many images broken by the attack: a real comparison
    cases = {
        "export": [formats["export"]], "fixed": [formats["fixed"]], "torchscript": [formats["torchscript"]],
        "factory": ["--model", f"{formats['factory']}:make", "--weights", formats["weights"]],
    }
    for name, given in cases.items():
        result = run("curve", *given, *DIGITS, *CURVE, "--out", tmp_path / name)
        assert result.exit_code == 0, (name, result.output)
        assert distances(tmp_path / name) == pytest.approx(expected, rel=1e-5, abs=1e-6), name


def test_a_model_without_its_weights_is_another_model(run: Callable[..., Any], formats: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """The factory's zeros are not the checkpoint: the weights really are what --weights loads."""
    result = run("curve", "--model", f"{formats['factory']}:make", *DIGITS, *CURVE, "--out", tmp_path / "zeros")
    assert result.exit_code == 0, result.output
    assert set(distances(tmp_path / "zeros")) <= {0.0, float("inf")}  # constant logits: wrong, or unbreakable


def test_results_record_how_the_model_was_loaded(run: Callable[..., Any], formats: dict[str, Path],
                                                 tmp_path: Path) -> None:
    import json

    result = run("curve", formats["export"], *DIGITS, *CURVE, "--normalize", "0", "1", "--out", tmp_path / "n")
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "n" / "summary.json").read_text())["settings"]
    assert settings["model"]["format"] == "torch.export"
    assert settings["model"]["normalize"] == {"mean": [0.0], "std": [1.0]}
    again = run("curve", formats["export"], *DIGITS, *CURVE, "--out", tmp_path / "n")  # other settings: refused
    one_line(again, "model")


@pytest.mark.parametrize(("dim", "smallest", "largest"), [(None, 2, 2), (torch.export.Dim("b", min=1, max=3), 1, 3),
                                                        (torch.export.Dim("b", min=2), 2, None)])
def test_batches_are_cut_and_padded_to_what_the_program_takes(dim: Any, smallest: int, largest: int | None) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    program = torch.export.export(model, (torch.rand(2, 3, 2, 2),), dynamic_shapes=None if dim is None else ({0: dim},))
    wrapped = ExportedModel(program)
    assert (wrapped.smallest, wrapped.largest) == (smallest, largest)
    for count in (1, 7):
        images = torch.rand(count, 3, 2, 2, requires_grad=True)
        out = wrapped.eval()(images)
        assert out.shape == (count, 3) and torch.allclose(out, model(images), atol=1e-6)
        out.sum().backward()
        assert images.grad is not None and images.grad.abs().sum() > 0  # attacks get input gradients through it


def test_normalize_equals_normalisation_inside_the_model(run: Callable[..., Any], tmp_path: Path) -> None:
    factory = tmp_path / "nets.py"
    factory.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def plain():
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

        class Scale(nn.Module):
            def forward(self, x):
                return (x - 0.25) / 0.5

        def inside():
            return nn.Sequential(Scale(), plain())
    """))
    flags = [*DIGITS, *CURVE]
    outside = run("curve", "--model", f"{factory}:plain", "--normalize", "0.25", "0.5", *flags, "--out", tmp_path / "a")
    within = run("curve", "--model", f"{factory}:inside", *flags, "--out", tmp_path / "b")
    assert outside.exit_code == 0 and within.exit_code == 0, outside.output + within.output
    assert distances(tmp_path / "a") == pytest.approx(distances(tmp_path / "b"), rel=1e-6)
    assert any(0 < d < float("inf") for d in distances(tmp_path / "a"))


class _Marker:
    """Unpickling this creates a file: the proof that a payload ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def _rewritten(source: Path, target: Path, members: dict[str, bytes], extra: dict[str, bytes] | None = None) -> Path:
    """A copy of the archive ``source`` with the members ending in a key of ``members`` replaced."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        root = original.namelist()[0].split("/")[0]
        for item in original.infolist():
            data = original.read(item)
            copy.writestr(item, next((v for k, v in members.items() if item.filename.endswith(k)), data))
        for name, data in (extra or {}).items():
            copy.writestr(f"{root}/{name}", data)
    return target


def _hostile_programs(export: Path, folder: Path, marker: Path) -> dict[str, Path]:
    """Exported programs that make torch.export.load unpickle or evaluate a payload creating ``marker``."""
    import io
    import json

    with zipfile.ZipFile(export) as archive:
        names = archive.namelist()
        weights = json.loads(archive.read(next(n for n in names if n.endswith("model_weights_config.json"))))
        program = archive.read(next(n for n in names if n.endswith("models/model.json"))).decode()
    payload = io.BytesIO()
    torch.save(_Marker(marker), payload)
    first = next(iter(weights["config"]))
    weights["config"][first]["use_pickle"] = True
    stored = weights["config"][first]["path_name"]
    symbol = next(iter(set(__import__("re").findall(r"Symbol\('(\w+)'", program))))
    return {
        "sample inputs": _rewritten(export, folder / "sample.pt2", {"sample_inputs/model.pt": payload.getvalue()}),
        "pickled weight": _rewritten(export, folder / "weight.pt2", {
            "model_weights_config.json": json.dumps(weights).encode(), f"weights/{stored}": payload.getvalue()}),
        "opaque constant": _rewritten(export, folder / "opaque.pt2", {"model_constants_config.json": json.dumps(
            {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False,
                              "tensor_meta": None}}}).encode()}, {"data/constants/opaque_obj_0": pickle.dumps(
                                  _Marker(marker))}),
        "expression": _rewritten(export, folder / "expression.pt2", {"models/model.json": program.replace(
            f"Symbol('{symbol}', positive=True, integer=True)",
            f"__import__('os').system('touch {marker}') or Symbol('{symbol}', positive=True, integer=True)",
            1).encode()}),
    }


def test_hostile_exported_programs_are_refused_before_torch_reads_them(formats: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    from lipcli.models.external import EXPORTED, load_file_model

    marker = tmp_path / "ran"
    hostile = _hostile_programs(formats["export"], tmp_path, marker)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the control: torch alone runs the payload
        torch.export.load(hostile["sample inputs"]).module()(torch.rand(2, 1, 8, 8))
    assert marker.exists(), "the control payload did not run: the hostile files test nothing"
    marker.unlink()
    for name, path in hostile.items():
        with pytest.raises(CheckpointError, match="refused"):
            load_file_model(path, EXPORTED, torch.device("cpu"))
        assert not marker.exists(), name
    assert isinstance(load_file_model(formats["export"], EXPORTED, torch.device("cpu")), nn.Module)


def test_malicious_files_are_refused_and_never_run(run: Callable[..., Any], formats: dict[str, Path],
                                                   tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": _Marker(marker)}, evil)
    one_line(run("curve", "--model", f"{formats['factory']}:make", "--weights", evil, *DIGITS, *CURVE), "refused")
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(evil)
    hostile = _hostile_programs(formats["export"], tmp_path, marker)["pickled weight"]
    one_line(run("curve", hostile, *DIGITS, *CURVE, "--out", tmp_path / "out"), str(hostile), "refused")
    scripted = _rewritten(formats["torchscript"], tmp_path / "hostile.ts", {"data.pkl": pickle.dumps(_Marker(marker))})
    one_line(run("curve", scripted, *DIGITS, *CURVE, "--out", tmp_path / "out"), str(scripted))
    assert not marker.exists()


def test_models_in_training_mode_are_refused(run: Callable[..., Any], tmp_path: Path) -> None:
    """Dropout left on (other scores each call) or BatchNorm on batch statistics (scores depending on the other
    images) would make attacks weaker and the model look robust."""
    example = torch.rand(4, 1, 8, 8)
    dropout = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.Linear(32, 10)).train()
    batchnorm = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10)).train()
    batch = ({0: torch.export.Dim("batch", min=1)},)
    torch.export.save(torch.export.export(dropout, (example,), dynamic_shapes=batch), tmp_path / "dropout.pt2")
    torch.export.save(torch.export.export(batchnorm, (example,), dynamic_shapes=batch), tmp_path / "bn.pt2")
    one_line(run("curve", tmp_path / "dropout.pt2", *DIGITS, *CURVE), "other scores each time", "model.eval()")
    one_line(run("curve", tmp_path / "bn.pt2", *DIGITS, *CURVE), "depend on the other images", "model.eval()")
    torch.export.save(torch.export.export(batchnorm.eval(), (example,), dynamic_shapes=batch), tmp_path / "ok.pt2")
    assert run("curve", tmp_path / "ok.pt2", *DIGITS, *CURVE, "--out", tmp_path / "ok").exit_code == 0


def test_a_changed_factory_is_another_model(run: Callable[..., Any], tmp_path: Path) -> None:
    """--model's identity is the model it builds, not the text of the spec: results of the old code and the new
    are never mixed in one folder."""
    nets = tmp_path / "nets.py"
    nets.write_text("from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n")
    assert run("curve", "--model", f"{nets}:make", *DIGITS, *CURVE, "--out", tmp_path / "c").exit_code == 0
    nets.write_text("from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10, "
                    "bias=False))\n")
    one_line(run("curve", "--model", f"{nets}:make", *DIGITS, *CURVE, "--out", tmp_path / "c"), "checkpoint_sha256")


def test_models_that_do_not_fit_the_data_are_refused_before_any_attack(run: Callable[..., Any], tmp_path: Path,
                                                                       formats: dict[str, Path]) -> None:
    nets = tmp_path / "nets.py"
    nets.write_text(textwrap.dedent("""
        from torch import nn

        def three_classes():
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

        def wide_input():
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))

        def counted(num_classes):
            return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

        def broken():
            raise RuntimeError("no such weights")
    """))
    one_line(run("curve", "--model", f"{nets}:three_classes", *DIGITS, *CURVE), "10 classes", "[4, 3]")
    one_line(run("curve", "--model", f"{nets}:wide_input", *DIGITS, *CURVE), "fails on", "[1, 8, 8]")
    assert run("curve", "--model", f"{nets}:counted", *DIGITS, *CURVE, "--out", tmp_path / "c").exit_code == 0
    one_line(run("curve", "--model", f"{nets}:broken", *DIGITS, *CURVE), "RuntimeError: no such weights")
    one_line(run("curve", "--model", f"{nets}:missing", *DIGITS, *CURVE), "no callable 'missing'")
    one_line(run("curve", "--model", "no_such_package.models:net", *DIGITS, *CURVE), "cannot import")
    one_line(run("curve", formats["export"], *CURVE), "--dataset")
    one_line(run("curve", formats["checkpoint"], *DIGITS, *CURVE), "names its data set")
    one_line(run("curve", formats["checkpoint"], "--normalize", "0", "1", *CURVE), "names its data set")
    one_line(run("curve", formats["export"], "--model", f"{nets}:counted", *DIGITS, *CURVE), "not both")
    one_line(run("curve", *DIGITS, *CURVE), "--model")
    one_line(run("curve", formats["export"], "--weights", formats["weights"], *DIGITS, *CURVE), "--model")
    one_line(run("curve", formats["export"], *DIGITS, "--normalize", "0,0", "1", *CURVE), "as many means as stds")
    one_line(run("curve", formats["export"], *DIGITS, "--normalize", "0", "-1", *CURVE), "positive")
    one_line(run("curve", formats["export"], *DIGITS, "--normalize", "0,0,0", "1,1,1", *CURVE), "1 channels")


def test_a_torchvision_network_on_an_image_folder_end_to_end(run: Callable[..., Any], tmp_path: Path) -> None:
    """torchvision's resnet18 (random weights, num_classes from the data set, ImageNet normalisation) on a folder
    of 32x32 PNGs, from the command line."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 2), ("test", 3)):
        for name in ("cat", "dog"):
            (tmp_path / "images" / split / name).mkdir(parents=True)
            for index in range(count):
                pixels = torch.randint(0, 256, (32, 32, 3), generator=generator, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(tmp_path / "images" / split / name / f"{index}.png")
    result = run("curve", "--model", "torchvision.models:resnet18", "--dataset", "image-folder", "--data-dir",
                 tmp_path / "images", "--normalize", "0.485,0.456,0.406", "0.229,0.224,0.225", "-a", "deepfool",
                 "-O", "deepfool.steps=5", "--masking-check", "0", "--device", "cpu", "--quiet", "--out", tmp_path / "tv")
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "tv" / "distances.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[1]) for row in rows] == [0, 0, 0, 1, 1, 1]  # the test images, classes in name order
    assert all(float(row.split(",")[-1]) >= 0 for row in rows)


def test_stats_of_models_lipcli_did_not_train(run: Callable[..., Any], formats: dict[str, Path],
                                              tmp_path: Path) -> None:
    """Measured statistics for every format; the Eq. (6) bound where lipcli can take the layers apart (a factory's
    nn.Module, the normalisation included as its diagonal map), a named reason where it cannot (compiled code)."""
    import json

    nets = tmp_path / "nets.py"
    nets.write_text("from torch import nn\n\ndef mlp():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), "
                    "nn.ReLU(), nn.Linear(16, 10))\n")
    stats = ["--limit", "20", "--device", "cpu", "--quiet", "--json", *DIGITS]
    plain = run("stats", "--model", f"{nets}:mlp", *stats, "--out", tmp_path / "a")
    scaled = run("stats", "--model", f"{nets}:mlp", "--normalize", "0.5", "0.25", *stats, "--out", tmp_path / "b")
    assert plain.exit_code == 0 and scaled.exit_code == 0, plain.output + scaled.output
    bound, bound_scaled = (json.loads(r.stdout)[0]["bound"] for r in (plain, scaled))
    assert bound["unavailable"] is None
    assert bound_scaled["grad_loss_l2"] == pytest.approx(bound["grad_loss_l2"] / 0.25, rel=1e-6)
    for name in ("export", "torchscript"):
        result = run("stats", formats[name], *stats, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)[0]
        assert "compiled model" in summary["bound"]["unavailable"] and summary["grad_loss_l2"]["max"] > 0


def test_attack_and_robust_take_the_same_models(run: Callable[..., Any], formats: dict[str, Path],
                                                tmp_path: Path) -> None:
    import json

    common = [*DIGITS, "--limit", "8", "--device", "cpu", "--quiet", "--json"]
    attack = run("attack", formats["torchscript"], "-a", "deepfool", "-a", "fgsm", "--masking-check", "0", *common,
                 "--out", tmp_path / "a")
    assert attack.exit_code == 0, attack.output
    assert json.loads(attack.stdout)["settings"]["model"]["format"] == "torchscript"
    short = ["--norm", "l2", "--eps", "0.5", "-a", "apgd-ce", "-O", "apgd-ce.steps=10"]
    robust = run("robust", "--model", f"{formats['factory']}:make", "--weights", formats["weights"], *short, *common,
                 "--out", tmp_path / "r")
    reference = run("robust", formats["checkpoint"], *short, "--limit", "8", "--device", "cpu", "--quiet", "--json",
                    "--out", tmp_path / "ref")
    assert robust.exit_code == 0 and reference.exit_code == 0, robust.output + reference.output
    mine, theirs = (json.loads(r.stdout)[0]["per_eps"]["0.5"] for r in (robust, reference))
    assert mine["robust_accuracy"] == theirs["robust_accuracy"]


def test_torchrun_evaluates_an_exported_program_like_one_process(run: Callable[..., Any], formats: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    """Two processes under torchrun write the distances one process writes, for a model lipcli did not train."""
    from test_distributed import curve_in_one_and_two_processes

    flags = [formats["export"], *DIGITS, "--limit", "16", "--batch-size", "4", "-a", "deepfool", "--masking-check",
             "0", "--device", "cpu", "-q"]
    curve_in_one_and_two_processes(run, flags, tmp_path)


def test_robust_takes_only_a_curve_of_the_model_loaded_the_same_way(run: Callable[..., Any],
                                                                     formats: dict[str, Path], tmp_path: Path) -> None:
    """The same file with another --normalize is another model: its curve's distances are not this one's."""
    assert run("curve", formats["export"], *DIGITS, *CURVE, "--normalize", "0", "2", "--out", tmp_path / "c").exit_code == 0
    robust = ["robust", formats["export"], *DIGITS, "--norm", "l2", "--eps", "0.5", "-a", "apgd-ce", "-O",
              "apgd-ce.steps=5", "--limit", "24", "--device", "cpu", "--quiet", "--curve", tmp_path / "c"]
    one_line(run(*robust, "--out", tmp_path / "r1"), "measured on the model loaded as")
    assert run(*robust, "--normalize", "0", "2", "--out", tmp_path / "r2").exit_code == 0
