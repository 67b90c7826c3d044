"""The defence presets, as expansions into primitives with each paper's settings.

The paper's: AT steps use eps = 0.01 (an l2 budget for both J1 and J2); WCAT uses lam = 0.1 in the original
code's batch-mean convention (``batch_mean = true``; see :mod:`lipcli_builtins.defences.wcat`), its dual norm matching
the adversarial training: l1 with J1 (Lip1, lam divided by sqrt(n)), l2 with J2 (Lip2).

Baselines: ``trades-l2`` (TRADES in l2, eps 0.5; plain ``trades`` is l-inf) and ``fgsm-gradalign``, the
GradAlign paper's method as its code runs it: FGSM from ``x`` (``--attack_init=zero``) plus GradAlign.
"""

from __future__ import annotations

from typing import Any

AT_EPS = 0.01
LAMBDA = 0.1

_FGSM = ("at-fgsm", {"eps": AT_EPS})
_L2 = ("at-l2", {"eps": AT_EPS})
_LIP1 = ("wcat", {"norm": "l1", "lam": LAMBDA, "batch_mean": True, "method": "exact"})
_LIP2 = ("wcat", {"norm": "l2", "lam": LAMBDA, "batch_mean": True, "method": "exact"})

PRESETS: dict[str, tuple[list[tuple[str, dict[str, Any]]], str]] = {
    "j0": ([], "J0: plain training, the undefended baseline"),
    "j1": ([_FGSM], "J1: one-step signed-gradient adversarial training (AT-FGSM), eps 0.01 in l2"),
    "j2": ([_L2], "J2: one-step l2 adversarial training (normalised gradient), eps 0.01"),
    "j0-lip1": ([_LIP1], "J0-Lip1: WCAT Lipschitz penalty in l1 (l-inf attacks), lam 0.1/sqrt(n)"),
    "j0-lip2": ([_LIP2], "J0-Lip2: WCAT Lipschitz penalty in l2, lam 0.1"),
    "j1-lip": ([_FGSM, _LIP1], "J1-Lip: AT-FGSM plus the l1 Lipschitz penalty"),
    "j2-lip": ([_L2, _LIP2], "J2-Lip: l2 adversarial training plus the l2 Lipschitz penalty"),
    "tanh": ([("tanh-head", {})], "The tanh logit head, to combine with a preset: j2-lip+tanh"),
    "trades-l2": ([("trades", {"norm": "l2", "eps": 0.5})], "TRADES in l2: eps 0.5, 10 steps of 2 eps/10, beta 6"),
    "fgsm-gradalign": (
        [("fgsm-rs", {"random_start": False}), ("gradalign", {"lam": 0.2})],
        "FGSM + GradAlign (Andriushchenko & Flammarion): FGSM from x, l-inf 8/255, and GradAlign lam 0.2",
    ),
}


def expansion(name: str) -> list[tuple[str, dict[str, Any]]]:
    """A fresh copy of a preset's primitives and parameters."""
    return [(primitive, dict(params)) for primitive, params in PRESETS[name][0]]


def describe(name: str) -> str:
    """The preset's description followed by its expansion, as ``lipcli list defences`` shows it."""
    parts = [f"{p}({', '.join(f'{k}={v}' for k, v in params.items())})" for p, params in expansion(name)]
    return f"{PRESETS[name][1]} [= {' + '.join(parts) or 'no primitive'}]"
