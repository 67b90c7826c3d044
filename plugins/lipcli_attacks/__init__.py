"""lipcli's first-party attacks, registered through the public ``register_attacks`` hook.

Minimum-norm: ``min-norm`` (the default of ``lipcli curve``), ``deepfool`` (batched), ``boundary``
(decision-based). Fixed-budget, made minimal by a per-image search: ``gradient``, ``fgsm``, ``pgd-l2``,
``pgd-linf``, ``cw``. ``deepfool-torchattacks`` is torchattacks' own per-image DeepFool, kept as a reference.
"""

from __future__ import annotations

from lipcli import hookimpl
from lipcli.hookspecs import Register


@hookimpl
def register_attacks(register: Register) -> None:
    from lipcli_attacks import boundary, budgeted, deepfool, min_norm

    register("min-norm", min_norm.MinimumNorm,
             "Minimum-norm attack: box-aware DeepFool start, FAB-style refinement (l2, linf); the default")
    register("deepfool", deepfool.DeepFool, "DeepFool batched over images, torchattacks' steps (l2, linf)")
    register("deepfool-torchattacks", budgeted.TorchattacksDeepFool,
             "torchattacks' DeepFool as it is (one image at a time; slow reference, l2)")
    register("boundary", boundary.BoundaryAttack,
             "Decision-based Boundary attack (Brendel et al. 2018), labels only, batched (l2)")
    register("gradient", budgeted.GradientAttack, "One step along the l2-normalised loss gradient, size searched")
    register("fgsm", budgeted.FGSM, "torchattacks FGSM, size searched per image (linf)")
    register("pgd-l2", budgeted.PGDL2, "torchattacks PGDL2, budget searched per image (l2)")
    register("pgd-linf", budgeted.PGDLinf, "torchattacks PGD (iterative FGSM), budget searched per image (linf)")
    register("cw", budgeted.CarliniWagner, "torchattacks CW, constant c searched per image, no batch early stop (l2)")
