"""lipcli's APGD-CE and APGD-T against torchattacks' ``APGD`` / ``APGDT`` and adv_lib's ``apgd`` /
``apgd_targeted``, at the same fixed budgets on the same images.

Target (issue 15): at every (model, norm, eps) lipcli's attack is at least as strong as each outside one of
the same kind: its robust accuracy is no higher. Every proposal is judged by lipcli's accounting (eval mode,
re-classified, in [0, 1], float64 distance <= eps + 1e-6), whatever the library itself claims. Robust accuracy is
over all ``--limit`` first test images (a misclassified image is not robust), as RobustBench counts it. Every
attack gets AutoAttack's standard settings: 100 steps, one start, 9 target classes for the targeted ones.
Last, ``lipcli robust``'s fast ensemble (APGD-CE then APGD-T on the images still robust).

    python benchmarks/bench_robust.py [CHECKPOINT ...] [--limit 500] [--linf 0.05,0.1] [--l2 0.5,1.0]
        [--device cpu] [--only lipcli,torchattacks,adv_lib]

The outside libraries are benchmark-only dependencies: ``pip install torchattacks && pip install --no-deps
adv-lib``; adv_lib's import of ``visdom`` gets an empty stand-in here.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.modules.setdefault("visdom", types.ModuleType("visdom"))  # adv_lib imports it for plotting only

from lipcli.data.selection import Selection
from lipcli.attacks import BUDGET_TOLERANCE
from lipcli.curves import parse_eps
from lipcli.evaluation.accounting import measured_distances
from lipcli.evaluation.robust import robust_accuracy
from lipcli.evaluation.seeding import seeded
from lipcli.gradients import frozen_eval
from lipcli.models.targets import load_target
from lipcli.plugin_host import PluginHost
from lipcli.engine import make_engine

FASHION = "/usr/share/datasets/fashion-mnist"
MODELS = ["/work/bench-models/j0.pt", "/work/bench-models/j2-lip-tanh.pt"]
Run = Callable[[nn.Module, torch.Tensor, torch.Tensor, str, float], torch.Tensor]


def lipcli_runs(host: PluginHost) -> dict[str, Run]:
    def run(name: str) -> Run:
        attack = host.registry("attack").get(name).factory()

        def go(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
            budget = torch.full((images.shape[0],), eps, dtype=torch.float64, device=images.device)
            return attack.run_at(model, images, labels, norm, budget)

        return go

    return {"lipcli apgd-ce": run("apgd-ce"), "lipcli apgd-t": run("apgd-t")}


def torchattacks_runs(classes: int) -> dict[str, Run]:
    import torchattacks

    def ce(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
        attack = torchattacks.APGD(model, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=100, loss="ce")
        return attack(images, labels)

    def targeted(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
        attack = torchattacks.APGDT(model, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=100,
                                    n_classes=classes)
        return attack(images, labels)

    return {"torchattacks APGD": ce, "torchattacks APGDT": targeted}


def adv_lib_runs() -> dict[str, Run]:
    from adv_lib.attacks import apgd, apgd_targeted

    def ce(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
        return apgd(model, images, labels, eps=eps, norm=float("inf") if norm == "linf" else 2.0,
                    loss_function="ce", n_iter=100)

    def targeted(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
        return apgd_targeted(model, images, labels, eps=eps, norm=float("inf") if norm == "linf" else 2.0,
                             n_iter=100, num_targets=9)

    return {"adv_lib apgd (ce)": ce, "adv_lib apgd_targeted": targeted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", default=MODELS)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--linf", default="0.05,0.1")
    parser.add_argument("--l2", default="0.5,1.0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=FASHION)
    parser.add_argument("--only", default="lipcli,torchattacks,adv_lib")
    args = parser.parse_args()
    host = PluginHost(environ={})
    device = torch.device(args.device)
    only = args.only.split(",")
    for path in args.checkpoints:
        target = load_target(Path(path), make_engine(device, plugins=host), data_dir=Path(args.data_dir), selection=Selection(args.limit))
        model = target.model
        images = target.test.as_float(target.test.images).to(device)
        labels = target.test.labels.to(device)
        with torch.no_grad():
            correct = model(images).argmax(1) == labels
        runs: dict[str, Run] = {}
        if "lipcli" in only:
            runs.update(lipcli_runs(host))
        if "torchattacks" in only:
            runs.update(torchattacks_runs(target.info.num_classes))
        if "adv_lib" in only:
            runs.update(adv_lib_runs())
        print(f"\n{target.label}: {len(labels)} images, clean accuracy {100 * float(correct.double().mean()):.1f} %")
        print(f"{'norm':5} {'eps':>6}  " + "  ".join(f"{name:>22}" for name in [*runs, "lipcli fast ensemble"]))
        for norm in ("linf", "l2"):
            for text, eps in parse_eps(getattr(args, norm)):
                cells = []
                for name, run in runs.items():
                    with frozen_eval(model), seeded(0, name, 0):
                        started = time.perf_counter()
                        proposals = run(model, images[correct], labels[correct], norm, eps).detach()
                        seconds = time.perf_counter() - started
                        found, _ = measured_distances(model, images[correct], labels[correct], proposals, norm)
                    robust = int((found > eps + BUDGET_TOLERANCE).sum())
                    cells.append(f"{100 * robust / len(labels):6.1f} % {seconds:7.1f} s")
                started = time.perf_counter()
                result = robust_accuracy(
                    model, target.test, {n: host.registry("attack").get(n).factory() for n in ("apgd-ce", "apgd-t")},
                    norm, [(text, eps)], batch_size=len(labels), device=device, seed=0,
                )
                accuracy = result.per_eps[text].robust_accuracy
                cells.append(f"{100 * accuracy:6.1f} % {time.perf_counter() - started:7.1f} s")
                print(f"{norm:5} {text:>6}  " + "  ".join(f"{cell:>22}" for cell in cells), flush=True)


if __name__ == "__main__":
    main()
