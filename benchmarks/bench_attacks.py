"""Attack strength and speed side by side: lipcli's default against the strongest outside attacks.

Targets (issue 15), printed per model and norm over the correctly classified images of the first ``--limit``
test images:

* the default's median distance within 0.3 % of the per-image best over every attack run (outside and lipcli's);
* its AttackBench optimality (Cinà et al. 2024) at least that of the best single outside attack;
* its time at most 1/4 of that best outside attack's.

Optimality: with ``A(attack) = mean_i min(d_i, d_max)`` (the area under the robust-accuracy-vs-eps curve up to
``d_max``, the largest finite per-image best distance), ``1 - (A - A_best) / (d_max - A_best)``; 1 is the
per-image best everywhere. Every distance is measured by lipcli's accounting (eval mode, re-classified, in
[0, 1], float64 norm); a failure is +inf. The outside attacks (``outside_attacks.py``) are benchmark-only
dependencies: ``pip install foolbox torchattacks tqdm && pip install --no-deps adv-lib``; adv_lib's import of
``visdom`` is given an empty stand-in here.

    python benchmarks/bench_attacks.py [CHECKPOINT ...] [--norms l2,linf] [--limit 300] [--steps 1000]
        [--only NAME,...] [--cache DIR] [--rerun NAME,...] [--repeat N] [--default-options JSON] [--device cpu]
        [--outside-chunk N] [--suite minimal|deepfool|decision]

``--cache DIR`` keeps each attack's distances and seconds per (checkpoint, norm, limit) and reuses them;
``--rerun`` runs the named attacks again anyway (``best-outside`` names the best single outside attack, so its
time is measured in the same run as the default's). ``--repeat N`` runs the default (and that rerun) N times,
alternating, and compares median times: on a shared machine one run's ratio moves by tens of percent (measured:
0.21 and 0.30 for the same attacks and images). lipcli's attacks call a model in pieces of at most ``chunk`` inputs
(32 on a CPU), which keeps a small CNN's activations in cache; the outside attacks call it with the whole batch.
``--outside-chunk N`` gives them the same split (``Chunked``), to see how much of a time ratio that part makes
(their results are cached apart). Without checkpoints, two small CNNs are trained on
Fashion-MNIST first (undefended and ``j2-lip+tanh``, 2 epochs each; about 6 minutes on 2 cores).

``--suite deepfool``: the batched ``deepfool`` against torchattacks' ``DeepFool`` (target: 10x faster at equal
distances). ``--suite decision``: decision-based attacks at equal query budgets (``bench_decision_attacks.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.modules.setdefault("visdom", types.ModuleType("visdom"))  # adv_lib imports it for plotting only

from lipcli.data.selection import Selection
from lipcli.config import resolve  # noqa: E402
from lipcli.curves import median_distance  # noqa: E402
from lipcli.evaluation.accounting import measured_distances  # noqa: E402
from lipcli.evaluation.seeding import seeded  # noqa: E402
from lipcli.gradients import frozen_eval  # noqa: E402
from lipcli.models.targets import load_target  # noqa: E402
from lipcli.plugin_host import PluginHost  # noqa: E402
from lipcli.engine import make_engine  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from outside_attacks import outside_attacks  # noqa: E402
from lipcli_builtins.attacks.chunked import Chunked  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
DEFAULT = "min-norm"
Run = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def lipcli_attack(host: PluginHost, name: str, norm: str, **options: object) -> Run:
    attack = host.registry("attack").get(name).factory(**options)
    return lambda model, images, labels: attack.run(model, images, labels, norm)


def timed(name: str, run: Run, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str,
          batch: int) -> tuple[torch.Tensor, float]:
    """(float64 distances by lipcli's accounting, seconds) of ``run`` over the images in batches, seeded."""
    found, seconds = [], 0.0
    for number, first in enumerate(range(0, len(images), batch)):
        x, y = images[first : first + batch], labels[first : first + batch]
        with seeded(0, name, number):
            started = time.perf_counter()
            proposals = run(model, x, y)
            if proposals.is_cuda:
                torch.cuda.synchronize()
            seconds += time.perf_counter() - started
        found.append(measured_distances(model, x, y, proposals.detach(), norm)[0])
    return torch.cat(found), seconds


def optimality(distances: torch.Tensor, best: torch.Tensor) -> float:
    """AttackBench's optimality of ``distances`` against the per-image ``best`` (see the module docstring)."""
    finite = best[torch.isfinite(best)]
    if finite.numel() == 0:
        return float("nan")
    d_max = float(finite.max())
    area, area_best = distances.clamp(max=d_max).mean(), best.clamp(max=d_max).mean()
    return float(1 - (area - area_best) / (d_max - area_best)) if d_max > area_best else 1.0


def train_models(data_dir: str) -> list[Path]:
    import lipcli

    root = Path(tempfile.mkdtemp(prefix="bench-attacks-"))
    paths = []
    for defence in ("j0", "j2-lip+tanh"):
        print(f"training a small CNN ({defence}) on Fashion-MNIST for 2 epochs into {root} ...", flush=True)
        config = resolve(None, {}, [
            "data.dataset='fashion-mnist'", f"data.data_dir={data_dir!r}", "model.arch='small-cnn'",
            f"defence.name={defence!r}", "training.epochs=2", "training.seed=0", f"output.dir={str(root / defence)!r}",
        ])
        paths.append(lipcli.train(config).run_dir / "best.pt")
    return paths


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def minimal_suite(args: argparse.Namespace, host: PluginHost, path: Path) -> None:
    target = load_target(path, make_engine(args.device, plugins=host), data_dir=Path(args.data_dir), selection=Selection(args.limit))
    images = target.test.as_float(target.test.images.to(args.device))
    labels = target.test.labels.to(args.device)
    model = target.model
    with torch.no_grad():
        correct = model(images).argmax(1) == labels
    images, labels = images[correct], labels[correct]
    print(f"\n== {path} ({target.label}): {len(target.test)} test images, {len(labels)} classified correctly")
    rerun = set(args.rerun.split(",")) if args.rerun else set()
    for norm in args.norms.split(","):
        runs: dict[str, Run] = {DEFAULT: lipcli_attack(host, DEFAULT, norm, **json.loads(args.default_options)),
                                **outside_attacks(norm, args.steps)}
        if args.only:
            runs = {name: run for name, run in runs.items() if name in args.only.split(",") or name == DEFAULT}
        results: dict[str, tuple[torch.Tensor, float, bool]] = {}
        times: dict[str, list[float]] = {}
        split = f"-chunk{args.outside_chunk}" if args.outside_chunk else ""
        cache = args.cache / f"{file_hash(path)}-{norm}-{args.limit}{split}" if args.cache else None
        outside_model = Chunked(model, args.outside_chunk) if args.outside_chunk else model

        def measure(name: str) -> None:
            stored = cache / f"{name}.pt" if cache and name != DEFAULT else None  # the default always runs
            if stored and stored.exists() and name not in rerun:
                saved = torch.load(stored, weights_only=True)
                results[name] = (saved["distances"], float(saved["seconds"]), True)
                return
            with frozen_eval(model):
                distances, seconds = timed(name, runs[name], model if name == DEFAULT else outside_model, images,
                                           labels, norm, args.batch)
            times.setdefault(name, []).append(seconds)
            results[name] = (distances.cpu(), statistics.median(times[name]), False)
            print(f"   ran {name}: {seconds:.1f} s, median {median_distance(distances):.5f}", flush=True)
            if stored:
                stored.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"distances": distances.cpu(), "seconds": torch.tensor(results[name][1])}, stored)

        for name in runs:
            if name != DEFAULT:
                measure(name)
        outside = [name for name in results]
        best_outside = _best_single(results, outside)
        timed_together = [DEFAULT]
        if "best-outside" in rerun and best_outside:
            rerun.add(best_outside)
            timed_together.insert(0, best_outside)
            times.pop(best_outside, None)  # a first run above, not beside the default's
        for turn in range(args.repeat):  # alternating, so neither always runs in a slow spell of the machine
            for name in timed_together[::-1] if turn % 2 else timed_together:
                measure(name)
        _print_norm(norm, results, best_outside, len(labels))


def _best_single(results: dict[str, tuple[torch.Tensor, float, bool]], names: list[str]) -> str | None:
    if not names:
        return None
    best = torch.stack([results[n][0] for n in names]).min(0).values
    return max(names, key=lambda n: (optimality(results[n][0], best), -median_distance(results[n][0])))


def _print_norm(norm: str, results: dict[str, tuple[torch.Tensor, float, bool]], best_outside: str | None,
                count: int) -> None:
    best = torch.stack([d for d, _, _ in results.values()]).min(0).values
    reference = median_distance(best)
    print(f"-- {norm}: per-image best over {len(results)} attacks, median {reference:.5f}")
    print(f"   {'attack':22s} {'median':>9s} {'/best':>7s} {'optim.':>7s} {'fails':>5s} {'seconds':>9s} {'img/s':>7s}")
    for name, (distances, seconds, cached) in sorted(results.items(), key=lambda item: -optimality(item[1][0], best)):
        median = median_distance(distances)
        print(f"   {name:22s} {median:9.5f} {median / reference:7.4f} {optimality(distances, best):7.4f} "
              f"{int(distances.isinf().sum()):5d} {seconds:9.1f} {count / seconds:7.2f}{'  (cached)' if cached else ''}")
    if best_outside and DEFAULT in results:
        ours, ours_s, _ = results[DEFAULT]
        theirs, theirs_s, cached = results[best_outside]
        print(f"   {DEFAULT} vs the per-image best: median ratio {median_distance(ours) / reference:.4f} (target <= 1.003); "
              f"optimality {optimality(ours, best):.4f} vs {best_outside}'s {optimality(theirs, best):.4f} (target >=); "
              f"time ratio {ours_s / theirs_s:.3f} (target <= 0.25{', its time from the cache' if cached else ''})")


def deepfool_suite(args: argparse.Namespace, host: PluginHost, path: Path) -> None:
    target = load_target(path, make_engine(args.device, plugins=host), data_dir=Path(args.data_dir), selection=Selection(args.limit))
    images = target.test.as_float(target.test.images.to(args.device))
    labels = target.test.labels.to(args.device)
    with torch.no_grad():
        correct = target.model(images).argmax(1) == labels
    images, labels = images[correct], labels[correct]
    results = {}
    with frozen_eval(target.model):
        for name in ("deepfool", "deepfool-torchattacks"):
            results[name] = timed(name, lipcli_attack(host, name, "l2"), target.model, images, labels, "l2",
                                  args.batch)
    (ours, ours_s), (theirs, theirs_s) = results["deepfool"], results["deepfool-torchattacks"]
    both = torch.isfinite(ours) & torch.isfinite(theirs)
    gap = ((ours[both] - theirs[both]).abs() / theirs[both]).max() if both.any() else float("nan")
    print(f"{path}: deepfool batched vs torchattacks: speed-up {theirs_s / ours_s:.1f}x (target >= 10), medians "
          f"{median_distance(ours):.5f} vs {median_distance(theirs):.5f}, largest relative gap {float(gap):.2e} "
          f"where both succeed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--suite", choices=("minimal", "deepfool", "decision"), default="minimal")
    parser.add_argument("--norms", default="l2,linf")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--steps", type=int, default=1000, help="iterations of the outside gradient attacks")
    parser.add_argument("--only", help="run only these attacks (and the default)")
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--rerun", help="attacks to run again even when cached (best-outside: the best one)")
    parser.add_argument("--default-options", default="{}", help="options of the default attack, as JSON")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of the default (and of the best outside attack with --rerun best-outside), "
                             "alternating; their median times are compared")
    parser.add_argument("--outside-chunk", type=int,
                        help="call the model in pieces of at most N inputs in the outside attacks too")
    parser.add_argument("--data-dir", default=FASHION)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.repeat < 1 or (args.outside_chunk is not None and args.outside_chunk < 1):
        parser.error("--repeat and --outside-chunk must be at least 1")
    if args.outside_chunk and args.suite != "minimal":
        parser.error("--outside-chunk applies to the minimal suite only")
    if args.suite == "decision":
        from bench_decision_attacks import main as decision_main

        sys.argv = [sys.argv[0], *map(str, args.checkpoints), "--repeat", str(args.repeat), "--device", args.device]
        decision_main()
        return
    host = PluginHost()
    for path in args.checkpoints or train_models(args.data_dir):
        (minimal_suite if args.suite == "minimal" else deepfool_suite)(args, host, path)


if __name__ == "__main__":
    main()
