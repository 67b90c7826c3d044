"""Running attacks over a test set: per-image minimal distances per attack, their minimum, cost, warnings.

Batched throughout: each attack sees a batch of the correctly classified images at once, on the model's
device, in eval mode with parameters frozen (no weight gradients are built). lipcli then measures what each
attack returned (:mod:`lipcli.evaluation.accounting`). With several processes (torchrun) each takes every
N-th batch, the same batches a single process would form, so the per-image results are the same; they are
then joined on every process. Each attack runs on each batch under a seed of its own
(:func:`lipcli.evaluation.seeding.seeded`), so the results of random attacks depend on the seed and the
batches only: not on the other attacks, nor on which process ran the batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from lipcli.attacks import Attack
from lipcli.data.batches import elsewhere, iterate_batches
from lipcli.data.types import ImageSet
from lipcli.distributed import all_reduce
from lipcli.errors import DataError
from lipcli.evaluation.accounting import QueryCounter, measured_distances
from lipcli.evaluation.journal import BatchRecord, Journal
from lipcli.evaluation.seeding import DEFAULT_SEED, seeded
from lipcli.gradients import frozen_eval, input_gradient
from lipcli.reporting import SILENT, Reporter

MASKING_SHARE = 0.05
"""Warn about gradient masking when more than this share of the attacked images shows a sign of it."""


@dataclass
class AttackResult:
    """One attack over the whole set: distances (float64, +inf where it failed), seconds, model queries."""

    name: str
    distances: torch.Tensor
    seconds: float
    queries: int
    outside_box: int = 0
    decision_based: bool = False


@dataclass
class RobustnessResult:
    """Every attack's distances on the same images, and the per-image minimum over attacks."""

    norm: str
    labels: torch.Tensor
    predictions: torch.Tensor
    attacks: list[AttackResult]
    zero_gradients: int = 0
    warnings: list[str] = field(default_factory=list)
    adversarials: torch.Tensor | None = None
    """With ``keep_adversarials``: per image (on the CPU), the input whose distance is :attr:`minimum`: the
    image itself where the model misclassifies it, NaN where every attack failed."""
    positions: torch.Tensor | None = None
    """Each image's index in the test split (None: 0 to N-1), as :attr:`lipcli.data.types.ImageSet.positions`."""

    @property
    def minimum(self) -> torch.Tensor:
        """Per image, the smallest distance any attack found (0 for misclassified images)."""
        stacked = torch.stack([a.distances for a in self.attacks])
        return stacked.min(dim=0).values

    @property
    def clean_error(self) -> float:
        return float((self.predictions != self.labels).double().mean())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def attack_set(
    model: nn.Module,
    data: ImageSet,
    attacks: dict[str, Attack],
    norm: str,
    *,
    batch_size: int,
    device: torch.device,
    reporter: Reporter = SILENT,
    seed: int = DEFAULT_SEED,
    keep_adversarials: bool = False,
    journal: Journal | None = None,
) -> RobustnessResult:
    """Run every attack on every correctly classified image of ``data``; restores the model's mode.

    ``keep_adversarials`` keeps each image's closest adversarial on the CPU (as large as the test set).
    ``journal``: each (attack, batch) result is written there as soon as it is measured, and one found there
    (an interrupted run of the same settings) is taken instead of attacking that batch again.
    """
    if not attacks:
        raise ValueError("no attack given")
    if len(data) == 0:
        raise DataError("no test images to attack")
    with frozen_eval(model):
        predictions, zero_gradients = _clean_pass(model, data, batch_size, device, reporter)
        correct = predictions == data.labels
        closest = _Closest(data) if keep_adversarials else None
        results = []
        for position, (name, attack) in enumerate(attacks.items(), 1):
            counter = QueryCounter(model)
            distances = torch.zeros(len(data), dtype=torch.float64)
            outside = queries = 0
            seconds = 0.0
            description = f"attack {position}/{len(attacks)} {name} ({norm})"
            with reporter.task(description, int(correct.sum()), unit="images", log_each=True) as task:
                batches = iterate_batches(data, batch_size, device, skip=elsewhere(batch_size, correct))
                for number, (images, labels) in enumerate(batches):
                    first = number * batch_size
                    keep = correct[first : first + labels.shape[0]]
                    if images is not None:
                        chosen = keep.to(device)
                        attacked, truth = images[chosen], labels[chosen]
                        rows = torch.arange(first, first + labels.shape[0])[keep]
                        record = journal.load(name, number, rows, need_proposals=keep_adversarials) if journal else None
                        if record is None:
                            record = _attack_batch(model, counter, attack, attacked, truth, norm, device, rows,
                                                   seed=seed, name=name, number=number, keep=keep_adversarials)
                            if journal:
                                journal.save(name, number, record)
                        seconds += record.seconds
                        queries += record.queries
                        outside += record.outside_box
                        distances[rows] = record.distances
                        if closest is not None and record.proposals is not None:
                            closest.offer(rows, distances[rows], record.proposals)
                    task.advance(int(keep.sum()))
            # each process attacked its own batches: the rows it did not own are 0 there, so a sum joins them
            all_reduce(distances)
            queries, outside = (int(v) for v in all_reduce(torch.tensor([queries, outside])).tolist())
            seconds = float(all_reduce(torch.tensor(seconds, dtype=torch.float64), "max"))  # the slowest process
            results.append(AttackResult(
                name, distances, seconds, queries, outside, getattr(attack, "decision_based", False)
            ))
    result = RobustnessResult(norm, data.labels.clone(), predictions, results, zero_gradients,
                              positions=data.positions)
    result.warnings = masking_warnings(result)
    if closest is not None:
        result.adversarials = closest.joined(data, correct, result.minimum)
    return result


def _attack_batch(
    model: nn.Module, counter: QueryCounter, attack: Attack, images: torch.Tensor, labels: torch.Tensor, norm: str,
    device: torch.device, rows: torch.Tensor, *, seed: int, name: str, number: int, keep: bool,
) -> BatchRecord:
    """One attack on one batch of correctly classified images, timed, its proposals measured by lipcli."""
    before = counter.queries
    _sync(device)
    started = time.perf_counter()
    with seeded(seed, name, number):
        proposals = attack.run(counter, images, labels, norm).detach()
    _sync(device)
    seconds = time.perf_counter() - started
    measured, outside = measured_distances(model, images, labels, proposals, norm)
    return BatchRecord(rows, measured.cpu(), seconds, counter.queries - before, outside, proposals if keep else None)


class _Closest:
    """Per image, the proposal with the smallest measured distance so far, on the CPU."""

    def __init__(self, data: ImageSet) -> None:
        self.points = torch.zeros(data.images.shape, dtype=torch.float32)  # the dtype ImageSet.as_float gives
        self.distances = torch.full((len(data),), math.inf, dtype=torch.float64)

    def offer(self, rows: torch.Tensor, measured: torch.Tensor, proposals: torch.Tensor) -> None:
        """Keep ``proposals[i]`` for image ``rows[i]`` where its distance ``measured[i]`` (CPU) is smaller."""
        better = measured < self.distances[rows]
        self.distances[rows[better]] = measured[better]
        self.points[rows[better]] = proposals[better.to(proposals.device)].to(self.points.dtype).cpu()

    def joined(self, data: ImageSet, correct: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
        """The points of every process (the rows a process did not attack are 0 there, so a sum joins them),
        the clean image where it is misclassified (distance 0), NaN where ``minimum`` is a failure."""
        points = all_reduce(self.points)
        points[~correct] = data.as_float(data.read(~correct)).cpu()
        points[minimum.isinf()] = math.nan
        return points


def _clean_pass(
    model: nn.Module, data: ImageSet, batch_size: int, device: torch.device, reporter: Reporter
) -> tuple[torch.Tensor, int]:
    """(clean predictions ``[N]``, number of correctly classified images with a zero loss gradient)."""
    predictions = torch.zeros(len(data), dtype=torch.int64)
    zero = torch.zeros((), dtype=torch.int64)
    with reporter.task("clean", len(data), unit="images") as task:
        batches = iterate_batches(data, batch_size, device, skip=elsewhere(batch_size))
        for number, (images, labels) in enumerate(batches):
            if images is not None:
                _, logits, gradient = input_gradient(model, images, labels)
                predicted = logits.detach().argmax(1)
                predictions[number * batch_size : number * batch_size + labels.shape[0]] = predicted.cpu()
                zero += ((gradient.flatten(1) == 0).all(1) & (predicted == labels)).sum().cpu()
            task.advance(labels.shape[0])
    return all_reduce(predictions), int(all_reduce(zero))


def masking_warnings(result: RobustnessResult) -> list[str]:
    """Signs of gradient masking: zero input gradients, or a decision-based attack beating every gradient one."""
    attacked = int((result.predictions == result.labels).sum())
    warnings = []
    if attacked and result.zero_gradients > MASKING_SHARE * attacked:
        warnings.append(
            f"possible gradient masking: the loss gradient is exactly zero on {result.zero_gradients} of "
            f"{attacked} correctly classified images; gradient attacks cannot see them"
        )
    blind = [a for a in result.attacks if a.decision_based]
    sighted = [a for a in result.attacks if not a.decision_based]
    if attacked and blind and sighted:
        blind_best = torch.stack([a.distances for a in blind]).min(0).values
        sighted_best = torch.stack([a.distances for a in sighted]).min(0).values
        beaten = int((blind_best < 0.99 * sighted_best).sum())
        if beaten > MASKING_SHARE * attacked:
            warnings.append(
                f"possible gradient masking: the decision-based attack ({', '.join(a.name for a in blind)}) found "
                f"a smaller distance than every gradient attack on {beaten} of {attacked} images"
            )
    return warnings
