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


def test_the_fixed_batch_of_an_export_is_padded() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    program = torch.export.export(model, (torch.rand(4, 3, 2, 2),))
    wrapped = ExportedModel(program)
    assert wrapped.batch == 4
    images = torch.rand(7, 3, 2, 2, requires_grad=True)
    out = wrapped.eval()(images)
    assert torch.allclose(out, model(images)) and out.shape == (7, 3)
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


def test_malicious_files_are_refused_and_never_run(run: Callable[..., Any], formats: dict[str, Path],
                                                   tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": _Marker(marker)}, evil)
    one_line(run("curve", "--model", f"{formats['factory']}:make", "--weights", evil, *DIGITS, *CURVE), "refused")
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(evil)
    # an exported program and a TorchScript file with a pickle payload in place of one of their members
    for source, member in ((formats["export"], "weight_0"), (formats["torchscript"], "data.pkl")):
        hostile = tmp_path / f"hostile{source.suffix}"
        with zipfile.ZipFile(source) as original, zipfile.ZipFile(hostile, "w") as copy:
            for item in original.infolist():
                data = original.read(item)
                copy.writestr(item, pickle.dumps(_Marker(marker)) if item.filename.endswith(member) else data)
        result = run("curve", hostile, *DIGITS, *CURVE, "--out", tmp_path / "out")
        assert result.exit_code != 0
        one_line(result, str(hostile))
    assert not marker.exists()


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
    one_line(run("curve", "--model", f"{nets}:three_classes", *DIGITS, *CURVE), "10 classes", "[2, 3]")
    one_line(run("curve", "--model", f"{nets}:wide_input", *DIGITS, *CURVE), "cannot take", "[1, 8, 8]")
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
    from test_distributed import torchrun

    flags = [formats["export"], *DIGITS, "--limit", "16", "--batch-size", "4", "-a", "deepfool", "--masking-check",
             "0", "--device", "cpu", "-q"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process computes: the same float rounding
    try:
        single = run("curve", *flags, "--out", tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    assert single.exit_code == 0, single.output
    done = torchrun("curve", *flags, "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "two" / "distances.csv").read_text() == (tmp_path / "one" / "distances.csv").read_text()
