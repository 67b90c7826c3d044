"""``min-norm``: lipcli's minimum-norm attack, the default of ``lipcli curve`` in l2 and l-inf.

Why not DDN or FMN as they are: both follow the gradient of the margin to the currently highest other class,
so they settle on that class's boundary even when another class's boundary is closer (on an affine model
they stay 5-20 % above the exact distance). This attack is built from DeepFool-type projections instead,
in the spirit of FAB (Croce & Hein 2020):

1. Start: box-aware DeepFool over the ``candidates`` highest-scoring other classes: each step goes to the
   closest linearised boundary that the box [0, 1]^n can reach, the step solved exactly inside the box
   (:func:`lipcli.api.box_projection`).
2. Refine, ``steps`` (l-inf: ``linf_refine_steps``) times: linearise the margins at the current point p; project
   the clean image x onto the closest linearised boundary inside the box (``delta_x``) and the point itself onto it
   (``delta_p``); move to ``(1 - a)(p + eta delta_p) + a (x + eta delta_x)`` with ``a = min(|delta_p| / (|delta_p|
   + |delta_x|), alpha_max)``. An adversarial p is first pulled towards x by ``beta`` (using the same
   linearisation), so the iterate walks along the boundary towards the closest point instead of staying outside it.
3. Targeted walks: the same walk from x towards one class. A short one (``screen_steps``; ``linf_screen_steps``)
   towards each of the ``target_pool`` highest-scoring other classes; then the ``targets`` walks that got closest,
   per image, continue to ``target_steps`` (``linf_target_steps``) steps. The untargeted walk settles on one
   class's boundary, and the class whose boundary is closest is often not among the highest-scoring ones: on 47
   images of a tanh-head Fashion-MNIST CNN, walks towards the two highest-scoring classes only left the median l2
   distance 5.7 % above the per-image best of the attacks tried (ALMA among them); screening every class, 0.5 %.
4. Bisection on the segment from x to the best adversarial found.
5. Polish, ``polish_rounds`` (``linf_polish_rounds``) times: projected gradient ascent on the margin
   (``polish_steps`` steps) in a ball a little smaller than the best distance, started from the best point scaled
   into it; a success is bisected towards x and becomes the best. It corrects what linearisation misses where the
   model curves.
6. Boundary walk, ``walk_steps`` (l2) or ``linf_walk_steps`` (l-inf) steps: :func:`boundary_walk`, a walk in
   the manner of FMN (Pintor et al. 2021) towards the best point's class, whose radius shrinks after each
   adversarial iterate and grows after each clean one, started ``walk_start`` of the way from x to the best
   point. In l-inf the closest adversarial sits near a vertex of the ball, which linearised steps approach
   slowly; the walk's first sign steps span the whole radius and jump between vertices. Started inside the
   ball it explores more than from the best point itself, which more steps do not make up for: on the 262
   images an undefended Fashion-MNIST CNN classifies correctly among its first 300 test images, 60 steps left
   the median l-inf distance 0.32 % above the per-image best of six outside attacks (adv_lib's APGD-T, APGD,
   FAB, FMN; torchattacks' APGD, FAB) and itself when started at the best point, the same with 200 steps,
   and 0.12 % when started halfway (0.25 % from 0.4 of the way, 0.10 % from 0.6; the median moves with a few
   images near it).
7. Restart, ``restart_steps`` (l2) or ``linf_restart_steps`` (l-inf) steps: a second :func:`boundary_walk`, towards
   the closest class of the continued targeted walks other than the one step 6 walked to, from a random point at
   ``restart_radius`` (0.5) times the best distance from x (uniform in that l-inf ball, a random direction in l2).
   With a restart, step 3 continues a third targeted walk: the highest-scoring class's, which two screening steps
   often rank too low, or the next closest where it is among the two. Without targeted walks (``targets`` 0)
   there is no restart. Both walks are local; on a tanh-head Fashion-MNIST CNN (269 images, l-inf) the images where
   APGD-T beat the attack by more than 1 % were mostly ones where its adversarial's class (often the highest-
   scoring) was not the one walked to, and a walk towards that class from halfway to the best point stayed in
   the same local optimum where a random start did not. Without the restart that model's median was 1.0109 times
   the per-image best of six outside attacks and itself (optimality 0.9975); with it 1.0000 (0.9990), and 1.0000
   and 1.0015 with torch seeds 1 and 2 for the random starts; on an undefended CNN 1.0028 (0.9935) before, 1.0005
   (0.9975) after. A restart from halfway to the best point instead raised the optimality as much but left the
   median at 1.0109; starts at 0.3 of the best distance left it there too, at 0.7 it was 1.0000.

The stages that pay differ by norm, so their step counts are set per norm: ``steps``, ``screen_steps``,
``target_steps``, ``polish_rounds``, ``walk_steps`` and ``restart_steps`` in l2 (5, 4, 30, 3, 40, 0), and
``linf_refine_steps``, ``linf_screen_steps``, ``linf_target_steps``, ``linf_polish_rounds``, ``linf_walk_steps``
and ``linf_restart_steps`` in l-inf (0, 2, 6, 0, 50, 30). Only the restart draws random numbers (from torch's
generator, which lipcli seeds per attack and batch).

Model calls: every forward pass, and so every backward pass, goes to the model in pieces of at most ``chunk``
inputs (by default 32 on a CPU and 8192 on a GPU; :mod:`lipcli_builtins.attacks.chunked`). On a CPU a small conv
net's activations then stay in cache. On the Fashion-MNIST CNNs below (the correctly classified ones of the first 300
test images, in one batch; two runs each, one after another), calls of 32 took the attack from 15.7 and 17.0 s to
10.9 and 10.3 s in l-inf and from 32.0 and 29.6 s to 17.5 and 20.9 s in l2 on the undefended one, and from 16.3 and
12.6 s to 9.0 and 10.7 s in l-inf on the tanh-head one, with the same medians (calls of 16: 11.1 and 11.7 s, and
19.8 and 24.1 s; of 64: 11.3 and 11.9 s on the tanh head). The distances do not depend on the split beyond float
rounding.

Cost per image with the l2 defaults (10 classes): at most 20 start steps (2 backward passes each; most images need
3-5), 5 refinement steps (2 each), 9 x 4 screening and 2 x 26 targeted steps (1 each), 3 x 10 polish steps (1 each),
40 walk steps (1 each) and about 40 bisection forward passes: about 180 backward and 245 forward passes, against
1000 of each for DDN, FMN or ALMA at 1000 steps. On two Fashion-MNIST CNNs (undefended and tanh head, l2, 262 and
269 images, ``benchmarks/bench_attacks.py``) that is 0.19 and 0.18 of ALMA's time at 1000 steps, measured in the
same run (24.0 s and 24.3 s), at a median 1.0000 and 1.0015 times the per-image best over foolbox's DDN, adv_lib's
DDN and ALMA, and itself (optimality 0.9959 and 0.9959, ALMA's 0.9811 and 0.9748). The walk pays on the tanh-head
model: with 4 polish rounds and no walk (the earlier default) it was at 1.0046 (optimality 0.9924); 30 walk steps
gave 1.0029, 40 with 2 polish rounds 1.0015, and 40 with 3 the same while the undefended model's median went from
0.37733 to 0.37655 (with 2 rounds: 0.37792). On the models of an earlier session (262 and 264 images), polish rounds
3 and 4 took the tanh-head model's median from 1.0040 to 1.0028 of that best (optimality 0.9938 to 0.9949, time 25.0
s to 30.4 s); 5 refinement steps and 4 screening steps instead of 10 and 6 then left the median unchanged
(optimality 0.9942) and the time at 24.0 s, runs one after another. The untargeted refinement is short because the
targeted walks do most of the work: 40 steps gave the same distances.

With the l-inf defaults: the start, 9 x 2 screening and 3 x 4 targeted steps, 50 walk and 30 restart steps: about
115 backward and 145 forward passes per image (114 backward counted on a 10-class affine model), against about 440
and 460 for adv_lib's APGD-T searched over eps (3 targets, 20 iterations). On the two Fashion-MNIST CNNs of
``benchmarks/bench_attacks.py`` (undefended and tanh head; 262 and 269 images), median times of 3 runs beside the
best outside attack by optimality: 12.1 s against torchattacks' APGD's 59.8 s (0.203) and 12.6 s against adv_lib's
APGD-T's 54.5 s (0.232; single runs 0.16-0.27 and 0.22-0.27: close to the target of 0.25), at a median 1.0005 and
1.0000 times the per-image best over the six outside attacks and itself (optimality 0.9975 and 0.9990; theirs 0.9795
and 0.9568). Without the restart and without the chunked calls (on models trained the same way in an earlier
session, 262 and 264 images): 0.225 and 0.28 of APGD-T's time, medians 1.0019 and 1.0000. The earlier l-inf default,
l2's schedule followed by three rounds of APGD-T, took 0.88 and 1.06 of APGD-T's time at 1.0131 and 1.0019 there
(optimality 0.9952 and 0.9961).
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass

import torch
from torch import nn

from lipcli.api import Attack, box_projection, distance, margin_gradients
from lipcli_builtins.attacks.chunked import Chunked, call_size
from lipcli_builtins.attacks.deepfool import DeepFool, closest_in_box


@dataclass(frozen=True)
class Schedule:
    """How many steps each stage takes in one norm: the stages that pay differ between l2 and l-inf."""

    refine_steps: int
    screen_steps: int
    target_steps: int
    polish_rounds: int
    walk_steps: int
    restart_steps: int


class MinimumNorm(Attack):
    """Minimum-norm attack (DeepFool start, FAB-style refinement, segment bisection); l2 or l-inf."""

    def __init__(
        self,
        steps: int = 5,
        candidates: int = 2,
        start_steps: int = 20,
        overshoot: float = 0.02,
        alpha_max: float = 0.1,
        beta: float = 0.9,
        eta: float = 1.05,
        bisect_steps: int = 10,
        targets: int = 2,
        target_steps: int = 30,
        target_pool: int = 9,
        screen_steps: int = 4,
        polish_rounds: int = 3,
        polish_steps: int = 10,
        polish_shrink: float = 0.01,
        walk_steps: int = 40,
        walk_start: float = 0.5,
        linf_refine_steps: int = 0,
        linf_screen_steps: int = 2,
        linf_target_steps: int = 6,
        linf_polish_rounds: int = 0,
        linf_walk_steps: int = 50,
        restart_steps: int = 0,
        linf_restart_steps: int = 30,
        restart_radius: float = 0.5,
        chunk: int | None = None,
    ) -> None:
        if candidates < 1 or start_steps < 1 or bisect_steps < 0:
            raise ValueError("bisect_steps must be >= 0, candidates and start_steps >= 1")
        if not (0 <= alpha_max <= 1 and 0 < beta <= 1 and eta >= 1 and overshoot >= 0):
            raise ValueError("need 0 <= alpha_max <= 1, 0 < beta <= 1, eta >= 1, overshoot >= 0")
        self.candidates, self.start_steps = candidates, start_steps
        self.overshoot, self.alpha_max, self.beta, self.eta = overshoot, alpha_max, beta, eta
        self.bisect_steps = bisect_steps
        self.targets, self.target_pool = targets, target_pool
        if targets < 0 or target_pool < 1:
            raise ValueError("need targets >= 0, target_pool >= 1")
        if polish_steps < 1 or not 0 < polish_shrink < 1 or not 0 < walk_start < 1 or not 0 < restart_radius <= 1:
            raise ValueError("need polish_steps >= 1, 0 < polish_shrink < 1, 0 < walk_start < 1, "
                             "0 < restart_radius <= 1")
        self.polish_steps, self.polish_shrink, self.walk_start = polish_steps, polish_shrink, walk_start
        self.restart_radius = restart_radius
        if chunk is not None and chunk < 1:
            raise ValueError(f"need chunk >= 1, got {chunk}")
        self.chunk = chunk
        self.schedules = {
            "l2": Schedule(steps, screen_steps, target_steps, polish_rounds, walk_steps, restart_steps),
            "linf": Schedule(linf_refine_steps, linf_screen_steps, linf_target_steps, linf_polish_rounds,
                             linf_walk_steps, linf_restart_steps),
        }
        if any(value < 0 for schedule in self.schedules.values() for value in astuple(schedule)):
            raise ValueError("step counts and rounds (steps, screen_steps, target_steps, polish_rounds, walk_steps, "
                             "restart_steps, linf_refine_steps and the other linf_ forms) must be >= 0")

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
        schedule = self.schedules[norm]
        model = Chunked(model, call_size(model, images.device, self.chunk))
        start = DeepFool(self.start_steps, self.overshoot, self.candidates, box=True).run(model, images, labels, norm)
        best, best_distance = self._refine(model, images, labels, norm, start, self.candidates, schedule.refine_steps)
        ranked = self._targeted(model, images, labels, norm, best, best_distance, schedule) if self.targets else None
        best = segment_bisection(model, images, labels, best, self.bisect_steps)
        best_distance = _distance_if_fooled(model, images, labels, best, norm)
        self._polish(model, images, labels, norm, best, best_distance, schedule.polish_rounds)
        walked = self._walk(model, images, labels, norm, best, best_distance, schedule.walk_steps)
        if ranked is not None:
            self._restart(model, images, labels, norm, best, best_distance, ranked, walked, schedule.restart_steps)
        return best

    def _walk(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, best: torch.Tensor,
        best_distance: torch.Tensor, steps: int,
    ) -> torch.Tensor:
        """Step 6: a boundary walk (:func:`boundary_walk`) towards the best point's class, from ``walk_start`` of
        the way to it; its best point replaces ``best`` (and ``best_distance``, both in place) where it is closer.
        Returns the class walked towards per image, -1 where there was no walk."""
        walked = torch.full_like(labels, -1)
        index = (torch.isfinite(best_distance) & (best_distance > 0)).nonzero().flatten()
        if steps == 0 or index.numel() == 0:
            return walked
        x, y, point = images[index], labels[index], best[index]
        with torch.no_grad():
            target = model(point).scatter(1, y[:, None], -torch.inf).argmax(1)
        found, distances = boundary_walk(model, x, y, norm, x + self.walk_start * (point - x), target, steps)
        better = distances < best_distance[index]
        best[index[better]], best_distance[index[better]] = found[better], distances[better]
        walked[index] = target
        return walked

    def _restart(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, best: torch.Tensor,
        best_distance: torch.Tensor, ranked: tuple[torch.Tensor, torch.Tensor], walked: torch.Tensor, steps: int,
    ) -> None:
        """Step 7: a second boundary walk, towards the closest class of the continued targeted walks (``ranked``:
        their classes and distances, closest first) other than the class ``walked`` towards, from a random point
        at ``restart_radius`` times the best distance from x (uniform in that l-inf ball; a random direction in
        l2). Updates ``best`` and ``best_distance`` in place where it is closer."""
        if steps == 0:
            return
        classes, distances = ranked
        usable = (classes != walked[:, None]) & torch.isfinite(distances)
        index = (usable.any(1) & torch.isfinite(best_distance) & (best_distance > 0)).nonzero().flatten()
        if index.numel() == 0:
            return
        x, y = images[index], labels[index]
        target = classes[index, usable[index].int().argmax(1)]
        view = (-1,) + (1,) * (images.dim() - 1)
        if norm == "l2":
            noise = torch.randn_like(x)
            noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
        else:
            noise = 2 * torch.rand_like(x) - 1
        radius = (self.restart_radius * best_distance[index]).to(x.dtype).view(view)
        found, found_distance = boundary_walk(model, x, y, norm, (x + radius * noise).clamp(0, 1), target, steps)
        better = found_distance < best_distance[index]
        best[index[better]], best_distance[index[better]] = found[better], found_distance[better]

    def _targeted(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, best: torch.Tensor,
        best_distance: torch.Tensor, schedule: Schedule,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targeted walks: a short one towards each of the ``target_pool`` highest-scoring other classes, then
        the ``targets`` walks that got closest continue to ``target_steps`` steps (per image, its own classes);
        with a restart walk (step 7) one more continues: the highest-scoring class's, or where that is among them
        the next closest.
        Updates ``best`` and ``best_distance`` in place; returns the continued walks' classes and distances,
        closest first, per image."""

        def keep(found: torch.Tensor, found_distance: torch.Tensor) -> torch.Tensor:
            better = found_distance < best_distance
            best[better], best_distance[better] = found[better], found_distance[better]
            return found_distance

        with torch.no_grad():
            others = model(images).scatter(1, labels[:, None], -torch.inf)
        pool = others.topk(min(max(self.target_pool, self.targets), others.shape[1] - 1), dim=1).indices
        screen = min(schedule.screen_steps, schedule.target_steps)
        points, reached = [], []
        for column in range(pool.shape[1]):
            found, found_distance = self._refine(model, images, labels, norm, images, pool[:, column : column + 1],
                                                 screen)
            points.append(found)
            reached.append(keep(found, found_distance))
        screened = torch.stack(reached, dim=1).argsort(dim=1, stable=True)
        order = screened[:, : self.targets]
        if schedule.restart_steps and screened.shape[1] > self.targets:
            # two screening steps often misrank the highest-scoring class (pool column 0), which a restart can use
            extra = torch.where((order == 0).any(1), screened[:, self.targets], 0)
            order = torch.cat([order, extra[:, None]], dim=1)
        points = torch.stack(points, dim=1)
        rows = torch.arange(images.shape[0], device=images.device)
        continued = []
        for column in range(order.shape[1]):
            picked = order[:, column]
            continued.append(keep(*self._refine(model, images, labels, norm, points[rows, picked],
                                                pool[rows, picked][:, None], schedule.target_steps - screen)))
        distances = torch.stack(continued, dim=1)
        rank = distances.argsort(dim=1, stable=True)
        return pool.gather(1, order).gather(1, rank), distances.gather(1, rank)

    def _polish(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, best: torch.Tensor,
        best_distance: torch.Tensor, rounds: int,
    ) -> None:
        """Step 5: margin ascent (:func:`_pgd_margin`) at a budget a little smaller than the best distance, ``rounds``
        times.

        Each round looks for an adversarial within ``(1 - shrink) d_best`` (float64, per image), from the best
        point scaled into that ball; a success becomes the new best, bisected towards the image. The shrink starts
        at ``polish_shrink`` and adapts per image: x1.5 after a success, /2 after a failure. Updates ``best`` and
        ``best_distance`` in place.
        """
        view = (-1,) + (1,) * (images.dim() - 1)
        shrink = torch.full_like(best_distance, self.polish_shrink)
        for _ in range(rounds):
            index = (torch.isfinite(best_distance) & (best_distance > 0)).nonzero().flatten()
            if index.numel() == 0:
                break
            x, y = images[index], labels[index]
            radius = best_distance[index] * (1 - shrink[index])
            scale = (radius / best_distance[index]).to(images.dtype).view(view)
            found = _pgd_margin(model, x, y, norm, x + scale * (best[index] - x), radius, self.polish_steps)
            found = segment_bisection(model, x, y, found, self.bisect_steps)
            measured = _distance_if_fooled(model, x, y, found, norm)
            better = measured < best_distance[index]
            best[index[better]], best_distance[index[better]] = found[better], measured[better]
            shrink[index] = torch.where(better, (shrink[index] * 1.5).clamp(max=0.5), shrink[index] / 2)

    def _refine(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, start: torch.Tensor,
        classes: torch.Tensor | int, steps: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(closest adversarial among the iterates, its float64 distance, +inf where none): ``steps`` FAB-style
        steps from ``start`` towards the linearised boundaries of ``classes``."""
        best = images.clone()
        best_distance = torch.full((images.shape[0],), torch.inf, dtype=torch.float64, device=images.device)
        point = start
        pick = torch.arange(images.shape[0], device=images.device)
        view = (-1,) + (1,) * (images.dim() - 1)
        for step_index in range(steps + 1):
            last = step_index == steps
            if last:
                with torch.no_grad():
                    logits = model(point)
            else:
                logits, _, margins, gradients = margin_gradients(model, point, labels, classes)
            fooled = logits.argmax(1) != labels
            measured = torch.where(fooled, distance(point - images, norm), torch.inf)
            better = measured < best_distance
            best, best_distance = torch.where(better.view(view), point, best), torch.minimum(measured, best_distance)
            if last:
                break
            # The margins at any u, linearised at the point: f + w . (u - point).
            base = torch.where(fooled.view(view), images + self.beta * (point - images), point)
            offset_x = (gradients * (images - point).unsqueeze(1)).flatten(2).sum(2)
            at_x = margins + offset_x
            closest, delta_x = closest_in_box(images, -at_x, gradients, norm)
            w = gradients[pick, closest]
            at_base = margins[pick, closest] + (w * (base - point)).flatten(1).sum(1)
            delta_base = box_projection(base, w, -at_base, norm)
            size_x, size_base = distance(delta_x, norm), distance(delta_base, norm)
            alpha = (size_base / (size_base + size_x)).clamp(max=self.alpha_max).nan_to_num(0.0)
            alpha = alpha.to(images.dtype).view(view)
            moved = (1 - alpha) * (base + self.eta * delta_base) + alpha * (images + self.eta * delta_x)
            usable = torch.isfinite(moved.flatten(1)).all(1).view(view)
            point = torch.where(usable, moved, base).clamp(0, 1).detach()
        return best, best_distance


@torch.no_grad()
def segment_bisection(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, adversarial: torch.Tensor, steps: int
) -> torch.Tensor:
    """The adversarial point closest to the clean image on each segment [x, adversarial], by bisection.

    Images whose ``adversarial`` is not misclassified are returned unchanged (still not adversarial). A probe
    counts as adversarial only where it is misclassified by more than rounding (:func:`clearly_fooled`): a point
    found on the boundary to the last bit could be classified either way once evaluated in another batch.
    """
    view = (-1,) + (1,) * (images.dim() - 1)
    low = torch.zeros(images.shape[0], device=images.device, dtype=images.dtype)
    high = torch.ones_like(low)
    best = adversarial.clone()
    valid = model(adversarial).argmax(1) != labels
    for _ in range(steps):
        middle = (low + high) / 2
        probe = (images + middle.view(view) * (adversarial - images)).clamp(0, 1)
        closer = clearly_fooled(model(probe), labels) & valid
        best[closer] = probe[closer]
        high = torch.where(closer, middle, high)
        low = torch.where(closer, low, middle)
    return best


ROUNDING_MARGIN = 1e-6
"""A wrong class must beat the label's logit by this share of the largest logit's size to count as a clear win:
float32 products round differently with the batch's size (a few 1e-7 relative on small models)."""


def clearly_fooled(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Whether each row's best wrong class beats the label by more than :data:`ROUNDING_MARGIN` of its scale."""
    label = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], -torch.inf).amax(1)
    return other - label > ROUNDING_MARGIN * logits.detach().abs().amax(1)


@torch.no_grad()
def _distance_if_fooled(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, points: torch.Tensor,
                        norm: str) -> torch.Tensor:
    fooled = model(points).argmax(1) != labels
    return torch.where(fooled, distance(points - images, norm), torch.inf)


def _pgd_margin(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, start: torch.Tensor,
    radius: torch.Tensor, steps: int,
) -> torch.Tensor:
    """Steepest ascent on the margin ``max_j z_j - z_label`` within ``radius`` (per image) and the box; returns
    the first misclassified iterate per image, or the last iterate where none was."""
    view = (-1,) + (1,) * (images.dim() - 1)
    radius = radius.to(images.dtype).view(view)
    point, found = start.clone(), start.clone()
    done = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
    for step in range(steps + 1):
        x = point.detach().requires_grad_(True)
        logits = model(x)
        fooled = (logits.argmax(1) != labels) & ~done
        found[fooled], done = point[fooled], done | fooled
        if step == steps or bool(done.all()):
            break
        own = logits.gather(1, labels[:, None]).squeeze(1)
        margin = logits.scatter(1, labels[:, None], -torch.inf).amax(1) - own
        (gradient,) = torch.autograd.grad(margin.sum(), x)
        size = radius * (0.25 * (1 + math.cos(math.pi * step / steps)) / 2 + 0.01)
        point = torch.where(done.view(view), point, _steepest_step(point, images, gradient, size, radius, norm))
    return torch.where(done.view(view), found, point)


def _steepest_step(
    point: torch.Tensor, images: torch.Tensor, gradient: torch.Tensor, size: torch.Tensor, radius: torch.Tensor,
    norm: str,
) -> torch.Tensor:
    """``point`` moved by ``size`` along the steepest ascent direction of ``gradient`` in ``norm`` (its direction in
    l2, its sign in l-inf), projected onto the ball of ``radius`` around ``images`` and onto the box; ``size`` and
    ``radius`` broadcast per image."""
    view = (-1,) + (1,) * (images.dim() - 1)
    if norm == "l2":
        direction = gradient / gradient.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
    else:
        direction = gradient.sign()
    moved = point + size * direction - images
    if norm == "l2":
        moved = moved * (radius / moved.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)).clamp(max=1)
    else:
        moved = torch.maximum(torch.minimum(moved, radius), -radius)
    return (images + moved).clamp(0, 1).detach()


WALK_SCHEDULE = (0.2, 0.001, 1.0, 0.02)
"""(first, last) radius change and (first, last) step size of :func:`boundary_walk`, both relative and cosine-
annealed. The step size starts at the whole radius: in l-inf the first steps jump between vertices of the ball."""


def boundary_walk(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str, start: torch.Tensor,
    target: torch.Tensor, steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(closest adversarial found ``[B, ...]``, its float64 distance ``[B]``, +inf where none): a walk in the
    manner of FMN (Pintor et al. 2021) with a radius that adapts at every step.

    Each step moves along the gradient of the margin ``z_target - z_label`` (its sign in l-inf, its direction in
    l2), by a share of the radius, then projects onto the ball of that radius and the box. The radius shrinks by
    ``gamma`` after an adversarial iterate (never above the closest found) and grows by ``gamma`` after a clean
    one, so the walk oscillates across the boundary in ever smaller steps; only clearly misclassified iterates
    (:func:`clearly_fooled`) are kept. One forward and one backward pass per step.
    """
    view = (-1,) + (1,) * (images.dim() - 1)
    gamma_first, gamma_last, alpha_first, alpha_last = WALK_SCHEDULE
    best = start.clone()
    best_distance = torch.full((images.shape[0],), torch.inf, dtype=torch.float64, device=images.device)
    point = start.detach()
    radius = distance(point - images, norm).clamp_min(1e-6)
    for step in range(steps + 1):
        moving = step < steps
        point = point.requires_grad_(moving)
        with torch.set_grad_enabled(moving):
            logits = model(point)
        fooled = clearly_fooled(logits.detach(), labels)
        measured = distance(point.detach() - images, norm)
        better = fooled & (measured < best_distance)
        # torch.where, not masked writes: no host sync per step on a GPU
        best = torch.where(better.view(view), point.detach(), best)
        best_distance = torch.where(better, measured, best_distance)
        if not moving:
            break
        margin = logits.gather(1, target[:, None]) - logits.gather(1, labels[:, None])
        (gradient,) = torch.autograd.grad(margin.sum(), point)
        annealed = (1 + math.cos(math.pi * step / steps)) / 2
        gamma = gamma_last + (gamma_first - gamma_last) * annealed
        alpha = alpha_last + (alpha_first - alpha_last) * annealed
        radius = torch.where(fooled, torch.minimum(radius * (1 - gamma), best_distance), radius * (1 + gamma))
        size = radius.to(images.dtype).view(view)
        point = _steepest_step(point.detach(), images, gradient, alpha * size, size, norm)
    return best, best_distance
