"""FAB-T and Square, lipcli's against outside implementations at the same eps and budget (issue 15).

Per checkpoint and (norm, eps) it prints the robust accuracy over the first ``--limit`` test images (correct and
not broken within eps; lower is a stronger attack) and each attack's seconds:

* Square: lipcli's ``square`` against torchattacks' ``Square`` (AutoAttack's code), both ``--queries`` queries,
  p_init 0.8, margin loss, one restart.
* FAB-T: lipcli's ``fab-t`` at eps (``run_at``) against torchattacks' ``FAB(multi_targeted=True)`` (AutoAttack's
  code: 9 targets, 100 steps, one restart each); and, minimum-norm, lipcli's ``fab-t`` ``run`` against adv_lib's
  ``fab(targeted_restarts=True, restarts=9)``, both thresholded at each eps (one run per norm, its time shown on
  every row of that norm).

Every proposal is judged by lipcli's accounting (eval mode, re-classified, in [0, 1], float64 norm <= eps +
BUDGET_TOLERANCE), whoever made it. torchattacks and adv_lib are benchmark-only dependencies (adv_lib needs an
empty ``visdom`` stand-in, given here).

    python benchmarks/bench_autoattack_members.py [CHECKPOINT ...] [--limit 500] [--fab-limit 500]
        [--queries 1000] [--threads 1] [--only square,fab]
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

sys.modules.setdefault("visdom", types.ModuleType("visdom"))  # adv_lib imports it for plotting only

from lipcli.data.selection import Selection
from lipcli.attacks import BUDGET_TOLERANCE
from lipcli.evaluation.accounting import measured_distances
from lipcli.evaluation.seeding import seeded
from lipcli.gradients import frozen_eval
from lipcli.models.targets import load_target
from lipcli.plugin_host import PluginHost
from lipcli.engine import make_engine

FASHION = Path("/usr/share/datasets/fashion-mnist")
CHECKPOINTS = [Path("/work/bench-models/j0.pt"), Path("/work/bench-models/j2-lip-tanh.pt")]
BUDGETS = {"linf": (0.05, 0.1), "l2": (0.5, 1.0)}
TORCHATTACKS_NORM = {"l2": "L2", "linf": "Linf"}
Propose = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def timed(propose: Propose, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str,
          name: str) -> tuple[torch.Tensor, float]:
    """(lipcli's measured distances of ``propose(images, labels)``, seconds), seeded as ``lipcli robust`` seeds."""
    with frozen_eval(model), seeded(0, name, 0):
        started = time.perf_counter()
        proposals = propose(images, labels).detach()
        seconds = time.perf_counter() - started
    return measured_distances(model, images, labels, proposals, norm)[0], seconds


def robust_accuracy(distances: torch.Tensor, eps: float, total: int) -> float:
    """Share of all ``total`` images still robust: attacked (correctly classified) and not broken within eps."""
    return float((distances > eps + BUDGET_TOLERANCE).sum()) / total


def square_rows(host: PluginHost, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, total: int,
                norm: str, queries: int) -> list[tuple[str, float, float, float]]:
    import torchattacks

    rows = []
    for eps in BUDGETS[norm]:
        budget = torch.full((len(images),), eps, dtype=torch.float64)
        ours = host.registry("attack").get("square").factory(queries=queries)
        mine, mine_seconds = timed(partial(ours.run_at, model, norm=norm, eps=budget), model, images, labels, norm,
                                   "square")
        theirs_attack = torchattacks.Square(model, norm=TORCHATTACKS_NORM[norm], eps=eps, n_queries=queries, seed=0)
        theirs, theirs_seconds = timed(theirs_attack, model, images, labels, norm, "torchattacks")
        rows.append(("square", eps, robust_accuracy(mine, eps, total), mine_seconds))
        rows.append(("torchattacks Square", eps, robust_accuracy(theirs, eps, total), theirs_seconds))
    return rows


def fab_rows(host: PluginHost, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, total: int,
             norm: str) -> list[tuple[str, float, float, float]]:
    import torchattacks
    from adv_lib.attacks import fab as adv_lib_fab

    ours = host.registry("attack").get("fab-t").factory()
    with torch.no_grad():
        classes = int(model(images[:1]).shape[1])
    minimal, minimal_seconds = timed(partial(ours.run, model, norm=norm), model, images, labels, norm, "fab-t")
    theirs_minimal, theirs_minimal_seconds = timed(
        partial(adv_lib_fab, model, norm=2.0 if norm == "l2" else float("inf"), n_iter=100, restarts=classes - 1,
                targeted_restarts=True),
        model, images, labels, norm, "adv_lib",
    )
    rows = []
    for eps in BUDGETS[norm]:
        budget = torch.full((len(images),), eps, dtype=torch.float64)
        at_eps, seconds = timed(partial(ours.run_at, model, norm=norm, eps=budget), model, images, labels, norm,
                                "fab-t")
        theirs_attack = torchattacks.FAB(model, norm=TORCHATTACKS_NORM[norm], eps=eps, steps=100, n_restarts=1,
                                         multi_targeted=True, n_classes=classes, seed=0)
        theirs, theirs_seconds = timed(theirs_attack, model, images, labels, norm, "torchattacks")
        rows += [
            ("fab-t at eps", eps, robust_accuracy(at_eps, eps, total), seconds),
            ("torchattacks FAB multi-targeted", eps, robust_accuracy(theirs, eps, total), theirs_seconds),
            ("fab-t minimum-norm", eps, robust_accuracy(minimal, eps, total), minimal_seconds),
            ("adv_lib fab targeted_restarts", eps, robust_accuracy(theirs_minimal, eps, total),
             theirs_minimal_seconds),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="*", type=Path, default=CHECKPOINTS)
    parser.add_argument("--limit", type=int, default=500, help="first test images attacked by Square")
    parser.add_argument("--fab-limit", type=int, default=500, help="first test images attacked by FAB")
    parser.add_argument("--queries", type=int, default=1000, help="Square's query budget")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the machine is shared)")
    parser.add_argument("--only", default="square,fab", help="which comparisons: square, fab")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    host = PluginHost()
    only = set(args.only.split(","))
    for path in args.checkpoints:
        for suite, limit in (("square", args.limit), ("fab", args.fab_limit)):
            if suite not in only:
                continue
            target = load_target(path, make_engine("cpu", plugins=host), data_dir=FASHION, selection=Selection(limit))
            model = target.model.eval()
            images, labels = target.test.as_float(target.test.images), target.test.labels
            with torch.no_grad():
                correct = model(images).argmax(1) == labels
            print(f"\n{path.name}: {suite}, {len(images)} images, clean accuracy {float(correct.double().mean()):.3f}")
            print(f"{'attack':34} {'norm':5} {'eps':>5} {'robust acc':>10} {'seconds':>8}")
            for norm in BUDGETS:
                x, y = images[correct], labels[correct]
                if suite == "square":
                    rows = square_rows(host, model, x, y, len(images), norm, args.queries)
                else:
                    rows = fab_rows(host, model, x, y, len(images), norm)
                for name, eps, accuracy, seconds in rows:
                    print(f"{name:34} {norm:5} {eps:5.2f} {accuracy:10.3f} {seconds:8.1f}", flush=True)


if __name__ == "__main__":
    main()
