"""Outside minimum-norm attacks for the benchmarks, wrapped to one signature: ``run(model, images, labels)``.

foolbox 3, torchattacks and adv_lib are benchmark-only dependencies, never lipcli's: each is imported when its
attack runs. adv_lib imports ``visdom``, whose build fails on some machines: an empty stand-in module is enough
(``bench_attacks.py`` provides one). Fixed-eps attacks (APGD) become minimum-norm ones through lipcli's own
per-image eps search (:func:`lipcli.attacks.search.parameter_search`), as AttackBench does with a binary search.

Budgets follow AttackBench's 1000 steps: gradient attacks at 1000 iterations; FAB at its standard 100
iterations (each computes the Jacobian of every class, about ten times a gradient step); APGD searched over
about 20 eps values at 50 iterations each.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from lipcli.attacks.base import largest_distance
from lipcli.attacks.search import parameter_search

Run = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

_P = {"l2": 2, "linf": float("inf")}
_TA = {"l2": "L2", "linf": "Linf"}
_INITIAL = {"l2": 1.0, "linf": 8 / 255}


def _searched(norm: str, attack_at: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
              bisect_steps: int = 8) -> Run:
    """A fixed-eps attack made minimal: per-image eps bracketed by doubling/halving, then bisected."""

    def run(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        def at(index: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            return attack_at(model, images[index], labels[index], eps)

        return parameter_search(model, images, labels, norm, at, initial=_INITIAL[norm],
                                upper=largest_distance(norm, images[0].numel()), bracket_steps=12,
                                bisect_steps=bisect_steps)

    return run


def foolbox_ddn(norm: str, steps: int) -> Run | None:
    if norm != "l2":
        return None

    def run(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        import foolbox

        wrapped = foolbox.PyTorchModel(model, bounds=(0, 1))
        _, clipped, _ = foolbox.attacks.DDNAttack(steps=steps)(wrapped, images, labels, epsilons=None)
        return clipped

    return run


def adv_lib_attack(name: str, norm: str, steps: int) -> Run | None:
    """adv_lib's DDN, ALMA (l2 only), FMN, FAB, APGD and APGD-T (both eps searched), by name."""
    if name in ("ddn", "alma") and norm != "l2":
        return None

    def run(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from adv_lib import attacks

        if name == "ddn":
            return attacks.ddn(model, images, labels, steps=steps)
        if name == "alma":
            return attacks.alma(model, images, labels, distance="l2", num_steps=steps)
        if name == "fmn":
            return attacks.fmn(model, images, labels, norm=_P[norm], steps=steps)
        if name == "fab":
            return attacks.fab(model, images, labels, norm=_P[norm], n_iter=100)
        raise KeyError(name)

    if name == "apgd":
        def at(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            from adv_lib import attacks

            return attacks.apgd(model, images, labels, eps=eps, norm=_P[norm], n_iter=50)

        return _searched(norm, at)
    if name == "apgd-t":  # 3 targets at 20 iterations: about 1000 steps over the search, like the others
        def at_targeted(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            from adv_lib import attacks

            return attacks.apgd_targeted(model, images, labels, eps=eps, norm=_P[norm], n_iter=20, num_targets=3)

        return _searched(norm, at_targeted)
    return run


def torchattacks_attack(name: str, norm: str) -> Run:
    """torchattacks' FAB (100 steps) and APGD (eps searched).

    Not torchattacks' APGD-T: it attacks each target class on the images still robust, a subset, with the whole
    batch's eps tensor, so a per-image eps fails; adv_lib's APGD-T takes its place.
    """
    import torchattacks

    if name == "fab":  # FAB keeps only points within eps: eps is the box's diameter (no random restarts)
        return lambda model, images, labels: torchattacks.FAB(
            model, norm=_TA[norm], eps=largest_distance(norm, images[0].numel()), steps=100,
            n_classes=_classes(model, images))(images, labels)

    def at(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        column = eps.view(-1, *([1] * (images.dim() - 1)))
        return torchattacks.APGD(model, norm=_TA[norm], eps=column, steps=50, loss="ce")(images, labels)

    return _searched(norm, at)


def _classes(model: nn.Module, images: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(images[:1]).shape[1])


def outside_attacks(norm: str, steps: int) -> dict[str, Run]:
    """Every outside attack that works in ``norm``, by a name saying its library."""
    candidates: dict[str, Run | None] = {
        "foolbox-ddn": foolbox_ddn(norm, steps),
        "adv_lib-ddn": adv_lib_attack("ddn", norm, steps),
        "adv_lib-alma": adv_lib_attack("alma", norm, steps),
        "adv_lib-fmn": adv_lib_attack("fmn", norm, steps),
        "adv_lib-fab": adv_lib_attack("fab", norm, steps),
        "adv_lib-apgd": adv_lib_attack("apgd", norm, steps),
        "adv_lib-apgd-t": adv_lib_attack("apgd-t", norm, steps),
        "torchattacks-fab": torchattacks_attack("fab", norm),
        "torchattacks-apgd": torchattacks_attack("apgd", norm),
    }
    return {name: run for name, run in candidates.items() if run is not None}
