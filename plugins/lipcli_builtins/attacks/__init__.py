"""lipcli's first-party attacks, registered through the public ``register_attacks`` hook.

Minimum-norm: ``min-norm`` (the default of ``lipcli curve``), ``deepfool`` (batched), ``boundary``
(decision-based). Fixed-budget, made minimal by a per-image search: ``gradient``, ``fgsm``, ``pgd-l2``,
``pgd-linf``, ``cw``. At a fixed budget (``lipcli robust``) and made minimal the same way: ``apgd-ce``, ``apgd-t``
(AutoAttack's APGD); ``fab-t`` (also minimum-norm, like ``fab``) and ``square`` (score-based, at a budget
only). ``deepfool-torchattacks`` is torchattacks' own per-image DeepFool, kept as a reference.
"""

from __future__ import annotations

from lipcli.api import Register, hookimpl


@hookimpl
def register_attacks(register: Register) -> None:
    register("min-norm", "lipcli_builtins.attacks.min_norm:MinimumNorm",
             "Minimum-norm attack: box-aware DeepFool start, FAB-style refinement (l2, linf); the default")
    register("deepfool", "lipcli_builtins.attacks.deepfool:DeepFool",
             "DeepFool batched over images, torchattacks' steps (l2, linf)")
    register("deepfool-torchattacks", "lipcli_builtins.attacks.budgeted:TorchattacksDeepFool",
             "torchattacks' DeepFool as it is (one image at a time; slow reference, l2)")
    register("boundary", "lipcli_builtins.attacks.boundary:BoundaryAttack",
             "Decision-based Boundary attack (Brendel et al. 2018), labels only, batched (l2)")
    register("hsja", "lipcli_builtins.attacks.hsja:HopSkipJump",
             "Decision-based HopSkipJump (Chen et al. 2020), labels only, batched, a query budget per image (l2)")
    register("gradient", "lipcli_builtins.attacks.budgeted:GradientAttack",
             "One step along the l2-normalised loss gradient, size searched")
    register("fgsm", "lipcli_builtins.attacks.budgeted:FGSM", "torchattacks FGSM, size searched per image (linf)")
    register("pgd-l2", "lipcli_builtins.attacks.budgeted:PGDL2", "torchattacks PGDL2, budget searched per image (l2)")
    register("pgd-linf", "lipcli_builtins.attacks.budgeted:PGDLinf",
             "torchattacks PGD (iterative FGSM), budget searched per image (linf)")
    register("cw", "lipcli_builtins.attacks.budgeted:CarliniWagner",
             "torchattacks CW, constant c searched per image, no batch early stop (l2)")
    register("apgd-ce", "lipcli_builtins.attacks.apgd:APGD",
             "AutoAttack's APGD-CE (Croce & Hein 2020): step-size-free PGD on the cross-entropy (l2, linf)")
    register("apgd-t", "lipcli_builtins.attacks.apgd:APGDT",
             "AutoAttack's APGD-T: APGD on the targeted DLR loss, 9 highest other classes in turn (l2, linf)")
    register("fab-t", "lipcli_builtins.attacks.fab:FAB",
             "FAB-T (Croce & Hein 2020) as in AutoAttack: 9 target classes, 100 steps; minimum-norm or at eps (l2, linf)")
    register("fab", "lipcli_builtins.attacks.fab:UntargetedFAB",
             "Untargeted FAB (Croce & Hein 2020): closest linearised boundary over all classes; minimum-norm or at eps")
    register("square", "lipcli_builtins.attacks.square:SquareAttack",
             "Square Attack (Andriushchenko et al. 2020), score-based (no gradients), 5000 queries; at eps (l2, linf)")
