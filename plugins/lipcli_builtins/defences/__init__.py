"""lipcli's first-party training defences, registered through the public ``register_defences`` hook.

Primitives: ``at-fgsm`` (J1), ``at-l2`` (J2), ``at-pgd`` (Madry et al.), ``wcat`` (Lipschitz penalty),
``tanh-head``, and the baselines ``trades`` (Zhang et al.), ``fgsm-rs`` (Wong et al.) and ``gradalign``
(Andriushchenko & Flammarion). Presets (``preset=True``): ``j0``, ``j1``, ``j2``, ``j0-lip1``, ``j0-lip2``,
``j1-lip``, ``j2-lip``, ``tanh``, ``trades-l2`` and ``fgsm-gradalign``, combinable with ``+``.
"""

from __future__ import annotations

import functools

from lipcli.api import Register, hookimpl


@hookimpl
def register_defences(register: Register) -> None:
    from lipcli_builtins.defences import presets

    register("at-fgsm", "lipcli_builtins.defences.perturbations:SignedGradientStep",
        "J1 step: x + eps sign(g)/sqrt(n), eps an l2 budget")
    register("at-l2", "lipcli_builtins.defences.perturbations:NormalisedGradientStep", "J2 step: x + eps g/||g||_2")
    register(
        "at-pgd", "lipcli_builtins.defences.perturbations:ProjectedGradientAttackTraining",
        "Multi-step PGD adversarial training (Madry et al.), l-inf or l2, the standard baseline",
    )
    register(
        "wcat", "lipcli_builtins.defences.wcat:LipschitzPenalty",
        "Lipschitz penalty lam * max_i ||grad_x loss_i|| (l2 or l1); method exact, worst or fd",
    )
    register("tanh-head", "lipcli_builtins.defences.tanh:TanhHeadDefence",
        "The tanh logit head: BatchNorm without affine, |t| tanh(z/|t|)")
    register(
        "trades", "lipcli_builtins.defences.trades:Trades",
        "TRADES (Zhang et al.): CE(f(x)) + beta KL(f(x) || f(x')), x' the KL's PGD maximiser; l-inf 0.031 or l2 0.5",
    )
    register(
        "fgsm-rs", "lipcli_builtins.defences.perturbations:FastRandomStart",
        "FGSM from a random start (Wong et al.): one l-inf step of 1.25 eps, eps 8/255, projected",
    )
    register(
        "gradalign", "lipcli_builtins.defences.gradalign:GradientAlignment",
        "GradAlign (Andriushchenko & Flammarion): CE + lam mean(1 - cos(grad_x at x, at x + uniform eta))",
    )
    for name in presets.PRESETS:
        register(name, functools.partial(presets.expansion, name), presets.describe(name), preset=True)
