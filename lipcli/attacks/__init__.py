"""The attack toolkit: the interface attack plugins implement and the batched building blocks they share.

An attack proposes adversarial inputs; it never decides what counts. Robustness evaluation
(:mod:`lipcli.evaluation`) re-classifies every proposal in eval mode, checks it lies in [0, 1] and measures its
distance itself, so an attack that returns a wrong or out-of-range input can only fail, never flatter a model.
"""

from lipcli.attacks.base import (
    BUDGET_TOLERANCE,
    NORMS,
    Attack,
    AttackAtBudget,
    distance,
    is_misclassified,
    largest_distance,
    within_budget,
)

__all__ = [
    "BUDGET_TOLERANCE", "NORMS", "Attack", "AttackAtBudget", "distance", "is_misclassified", "largest_distance",
    "within_budget",
]
