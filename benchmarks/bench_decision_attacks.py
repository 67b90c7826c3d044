"""Decision-based l2 attacks at equal query budgets: lipcli's ``boundary`` and ``hsja`` against foolbox 3's
BoundaryAttack and HopSkipJump, on the same model and images.

Target (issue 15): at each budget (1,000 and 10,000 queries per image), lipcli's ``boundary`` (and its ``hsja``)
reaches a median distance no larger than the better foolbox attack, in less time; printed as ratios.

Queries are counted the same way for every attack: the model is wrapped in lipcli's ``QueryCounter``, which
counts every image it classifies (foolbox's initialisation, its checks and its batch-wide loops included).
foolbox's attacks take a number of steps, not queries: their steps are set from their cost per step so that
their queries per image come out at the budget; the measured queries per image are printed next to each.
Every distance is measured by lipcli's accounting (eval mode, re-classified, in [0, 1], float64 l2), on the
images the model classifies correctly; failures count as +inf. Each attack gets the same images in one batch,
with torch's generators seeded as ``lipcli`` seeds them. Wall-clock and process CPU seconds are both printed:
on a machine shared with other jobs, the CPU time is the steadier measure, and ``--repeat N`` runs every attack N
times in a rotated order and compares median times (at equal budgets the model's forward passes dominate every
attack's time, so a slow spell of the machine decides a single run's ratio). foolbox is a benchmark-only
dependency.

    python benchmarks/bench_decision_attacks.py CHECKPOINT [CHECKPOINT ...] [--budgets 1000,10000]
        [--images 200,50] [--only boundary,hsja,foolbox-boundary,foolbox-hsja] [--repeat 1]
        [--boundary-options JSON] [--data-dir DIR] [--device cpu]

``--images`` gives how many correctly classified test images each budget attacks (the 10,000-query runs of
foolbox take minutes per hundred images on a laptop CPU). On a CPU shared with other jobs, run it with
``OMP_NUM_THREADS=1``: oversubscribed threads slow every attack several times over and blur the time ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from lipcli.data.selection import Selection
from lipcli.curves import median_distance
from lipcli.evaluation.accounting import QueryCounter, measured_distances
from lipcli.evaluation.seeding import DEFAULT_SEED, seeded
from lipcli.gradients import frozen_eval
from lipcli.models.targets import load_target
from lipcli.plugin_host import PluginHost
from lipcli.engine import make_engine

FASHION = "/usr/share/datasets/fashion-mnist"
ATTACKS = ("boundary", "hsja", "foolbox-boundary", "foolbox-hsja")
FOOLBOX_INIT = 55
"""Queries per image of foolbox's default start (LinearSearchBlendedUniformNoiseAttack, 50 blending steps, a few
noise draws) and its adversarial checks, as measured on Fashion-MNIST; only used to choose its steps."""

Run = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Row:
    """One attack at one budget."""

    attack: str
    budget: int
    images: int
    median: float
    failures: int
    seconds: float
    cpu_seconds: float
    queries_per_image: float


def foolbox_boundary(budget: int) -> Run:
    """foolbox's BoundaryAttack: one query per step, one more every 10th step (its success statistics)."""
    steps = max(1, int((budget - FOOLBOX_INIT) / 1.1))

    def run(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        import foolbox

        attack = foolbox.attacks.BoundaryAttack(steps=steps)
        _, clipped, _ = attack(foolbox.PyTorchModel(model, bounds=(0, 1)), images, labels, epsilons=None)
        return clipped

    return run


def hsja_steps(budget: int, dim: int) -> int:
    """The most foolbox HopSkipJump steps within ``budget`` queries per image: step t costs its gradient samples
    (100 sqrt(t)), about two geometric step-size queries and a bisection to 1 / (d sqrt(d))."""
    bisection = math.ceil(math.log2(dim**1.5))
    spent, steps = FOOLBOX_INIT + bisection, 0
    while True:
        cost = int(100 * math.sqrt(steps + 1)) + 2 + bisection
        if spent + cost > budget:
            return max(steps, 1)
        spent, steps = spent + cost, steps + 1


def foolbox_hsja(budget: int) -> Run:
    """foolbox's HopSkipJump (l2, geometric step sizes), steps chosen by :func:`hsja_steps`."""

    def run(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        import foolbox

        attack = foolbox.attacks.HopSkipJumpAttack(steps=hsja_steps(budget, images[0].numel()))
        _, clipped, _ = attack(foolbox.PyTorchModel(model, bounds=(0, 1)), images, labels, epsilons=None)
        return clipped

    return run


def lipcli_attack(host: PluginHost, name: str, budget: int, options: dict[str, object] | None = None) -> Run:
    """lipcli's ``boundary`` (1 + 1 / ``check_every`` queries per step after a start of about 27) or ``hsja``
    (an exact budget), with ``options`` for ``boundary`` (its steps are set from the budget)."""
    factory = host.registry("attack").get(name).factory
    if name == "boundary":
        per_step = 1 + 1 / factory(**(options or {})).check_every
        attack = factory(**(options or {}), steps=max(0, int((budget - 27) / per_step)))
    else:
        attack = factory(queries=budget)
    return lambda model, images, labels: attack.run(model, images, labels, "l2")


def runner(name: str, budget: int, host: PluginHost, boundary_options: dict[str, object] | None = None) -> Run:
    if name == "foolbox-boundary":
        return foolbox_boundary(budget)
    if name == "foolbox-hsja":
        return foolbox_hsja(budget)
    return lipcli_attack(host, name, budget, boundary_options)


def measure(name: str, run: Run, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, budget: int) -> Row:
    """Run once on all images, seeded as the engine seeds batch 0; distances by lipcli's accounting."""
    counter = QueryCounter(model)
    with seeded(DEFAULT_SEED, name, 0):
        if images.is_cuda:
            torch.cuda.synchronize()
        started, cpu_started = time.perf_counter(), time.process_time()
        proposals = run(counter, images, labels).detach()
        if images.is_cuda:
            torch.cuda.synchronize()
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    distances, _ = measured_distances(model, images, labels, proposals, "l2")
    return Row(name, budget, len(labels), median_distance(distances), int(distances.isinf().sum()), seconds,
               cpu_seconds, counter.queries / len(labels))


def compare(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    budgets: Sequence[int],
    device: torch.device,
    *,
    attacks: Sequence[str] = ATTACKS,
    counts: Sequence[int] | None = None,
    host: PluginHost | None = None,
    repeat: int = 1,
    boundary_options: dict[str, object] | None = None,
) -> list[Row]:
    """One :class:`Row` per attack and budget, on the first ``counts[i]`` images for ``budgets[i]`` (all if None).

    With ``repeat`` > 1 each budget's attacks run that many times, in a rotated order (so no attack always runs
    in the same part of a slow spell of a shared machine), and a row keeps the median wall and CPU seconds; the
    distances are the same every time (the same seeds). ``images`` must be classified correctly by ``model``;
    each measurement is printed as it is made.
    """
    host = host or PluginHost()
    images, labels = images.to(device), labels.to(device)
    rows = []
    with frozen_eval(model):
        for position, budget in enumerate(budgets):
            count = len(labels) if counts is None else counts[position]
            runs: dict[str, list[Row]] = {name: [] for name in attacks}
            for turn in range(repeat):
                for name in attacks[turn % len(attacks):] + attacks[: turn % len(attacks)]:
                    run = runner(name, budget, host, boundary_options)
                    row = measure(name, run, model, images[:count], labels[:count], budget)
                    print(format_row(row), flush=True)
                    runs[name].append(row)
            medians = [median_row(measured) for measured in runs.values()]
            if repeat > 1:
                print(f"median times of {repeat} runs:", *map(format_row, medians), sep="\n", flush=True)
            rows += medians
    return rows


def median_row(rows: list[Row]) -> Row:
    """The first row with the median wall and CPU seconds of all."""
    return replace(rows[0], seconds=statistics.median(r.seconds for r in rows),
                   cpu_seconds=statistics.median(r.cpu_seconds for r in rows))


def format_row(row: Row) -> str:
    return (f"{row.attack:17s} budget {row.budget:6d}  images {row.images:4d}  median {row.median:.5f}  "
            f"failures {row.failures:3d}  {row.seconds:7.1f} s ({row.cpu_seconds:7.1f} s CPU)  "
            f"{row.queries_per_image:7.1f} queries/image")


def ratios(rows: list[Row]) -> list[str]:
    """Per budget: each of lipcli's decision attacks over the better foolbox attack (the smaller median)."""
    lines = []
    for budget in dict.fromkeys(row.budget for row in rows):
        ours = [r for r in rows if r.budget == budget and not r.attack.startswith("foolbox")]
        theirs = [r for r in rows if r.budget == budget and r.attack.startswith("foolbox")]
        if not theirs:
            continue
        rival = min(theirs, key=lambda r: r.median)
        for row in ours:
            lines.append(f"budget {budget}: {row.attack} / {rival.attack}: median distance ratio "
                         f"{row.median / rival.median:.4f} (target <= 1), time ratio {row.seconds / rival.seconds:.3f} "
                         f"(CPU time {row.cpu_seconds / rival.cpu_seconds:.3f}; target < 1)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--budgets", default="1000,10000", help="queries per image, comma-separated")
    parser.add_argument("--images", default="200,50", help="images attacked at each budget, comma-separated")
    parser.add_argument("--only", default=",".join(ATTACKS))
    parser.add_argument("--data-dir", type=Path, default=Path(FASHION))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each attack; the median time is compared")
    parser.add_argument("--boundary-options", default="{}", help="options of lipcli's boundary, as JSON")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    counts = [int(n) for n in args.images.split(",")]
    if len(counts) != len(budgets):
        parser.error("--images needs one count per budget")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    boundary_options = json.loads(args.boundary_options)
    if "steps" in boundary_options:
        parser.error("--boundary-options: the steps come from the budget (--budgets)")
    attacks = tuple(dict.fromkeys(args.only.split(",")))
    if unknown := set(attacks) - set(ATTACKS):
        parser.error(f"unknown attack(s) {', '.join(sorted(unknown))}; use {', '.join(ATTACKS)}")

    host, device = PluginHost(), torch.device(args.device)
    for path in args.checkpoints:
        # enough test images that ``max(counts)`` of them are classified correctly
        target = load_target(path, make_engine(device, plugins=host), data_dir=args.data_dir, selection=Selection(2 * max(counts)))
        images = target.test.as_float(target.test.images.to(device))
        labels = target.test.labels.to(device)
        with torch.no_grad():
            correct = target.model(images).argmax(1) == labels
        images, labels = images[correct][: max(counts)], labels[correct][: max(counts)]
        print(f"{target.label}: {len(labels)} correctly classified test images", flush=True)
        rows = compare(target.model, images, labels, budgets, device, attacks=attacks, counts=counts, host=host,
                       repeat=args.repeat, boundary_options=boundary_options)
        for line in ratios(rows):
            print(f"{target.label} {line}", flush=True)


if __name__ == "__main__":
    main()
