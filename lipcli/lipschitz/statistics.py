"""``lipcli stats`` as an engine call: gradient and Jacobian statistics over a test set, the Eq. (6) bound
beside them, per-image robustness radii (Eq. (2)) and the first-order predictions of Lemma 2.2.

Every bound here is derived from the product bounds ``U_p`` of the logits z (:mod:`lipcli.lipschitz.bound`),
with p the attack norm, and these facts about the softmax ``s`` and the cross-entropy (p the probabilities,
y the one-hot label): ``||J_s||_{2,inf} <= sqrt(2)/4``, ``||J_s||_{1,1} <= 1/2``, ``||p - y||_2 <= sqrt(2)``,
``||p - y||_1 <= 2``. Hence, for every input:

* ``||grad loss||_2 <= sqrt(2) U_2`` and ``||grad loss||_1 <= 2 U_inf``;
* ``||J_f||_{2,inf} <= sqrt(2)/4 U_2`` and ``||J_f||_{1,1} <= U_1 / 2`` (f the probabilities);
* ``||J_z||_{2,inf} <= U_2`` and ``||J_z||_{inf,inf} <= U_inf``.

The certified radius of Eq. (2) is ``margin / (2 L)`` with ``margin = z_label - max_{j != label} z_j`` and L an
upper bound of the logits' Lipschitz constant from the attack norm to l-inf: ``U_2`` for l2, ``U_inf`` for
l-inf. Using instead the largest Jacobian norm measured on the test set (Eq. (5)) gives an *estimate*, not a
certificate: the measured maximum is a lower bound of the Lipschitz constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lipcli.data.batches import elsewhere, iterate_batches, num_batches
from lipcli.data.types import DatasetInfo, ImageSet
from lipcli.distributed import all_reduce
from lipcli.errors import DataError
from lipcli.gradients import frozen_eval
from lipcli.lipschitz.bound import BoundUnavailable, product_bound
from lipcli.lipschitz.jacobian import jacobian_norms
from lipcli.reporting import SILENT, Reporter

PER_IMAGE = (
    "loss", "margin", "grad_loss_l2", "grad_loss_l1", "jac_f_2inf", "jac_f_11", "jac_z_2inf", "jac_z_infinf",
    "certified_l2", "certified_linf", "estimate_l2", "estimate_linf",
)
"""Per-image columns of ``stats.csv`` (after index, label, prediction)."""

SOFTMAX_2INF = math.sqrt(2) / 4
SOFTMAX_11 = 0.5
LOSS_L2 = math.sqrt(2)
LOSS_L1 = 2.0


@dataclass
class Statistics:
    """One model's statistics: per-image columns ``[N]`` (float64) and the summary written to stats.json."""

    labels: torch.Tensor
    predictions: torch.Tensor
    per_image: dict[str, torch.Tensor]
    summary: dict[str, Any] = field(default_factory=dict)


def model_statistics(
    model: nn.Module,
    data: ImageSet,
    info: DatasetInfo,
    *,
    eps: dict[str, list[tuple[str, float]]],
    batch_size: int,
    device: torch.device,
    reporter: Reporter = SILENT,
) -> Statistics:
    """Statistics of ``model`` (eval mode, parameters frozen) over ``data``; ``eps[norm]`` are the attack
    sizes for Lemma 2.2's predictions, as (text as written, value)."""
    if len(data) == 0:
        raise DataError("no test images to measure")
    measured = PER_IMAGE[:1] + PER_IMAGE[2:8]
    # rows this process did not measure stay 0, so that a sum over the processes joins their batches
    per_image = {name: torch.zeros(len(data), dtype=torch.float64) for name in measured}
    logits = torch.zeros((len(data), info.num_classes), dtype=torch.float64)
    with frozen_eval(model):
        with reporter.task("jacobians", num_batches(len(data), batch_size)) as task:
            batches = iterate_batches(data, batch_size, device, skip=elsewhere(batch_size))
            for number, (images, labels) in enumerate(batches):
                if images is not None:
                    rows = slice(number * batch_size, number * batch_size + labels.shape[0])
                    norms = jacobian_norms(model, images, labels)
                    logits[rows] = norms.logits.double().cpu()
                    for name in measured:
                        per_image[name][rows] = getattr(norms, name).double().cpu()
                task.advance(1)
        reporter.info("bounding the Lipschitz constant (Eq. (6)) layer by layer")
        bounds, unavailable = _bounds(model, info)
    all_reduce(logits)
    for values in per_image.values():
        all_reduce(values)
    labels = data.labels.clone()
    predictions = logits.argmax(1)
    per_image["margin"] = margins(logits, labels)
    measured_lipschitz = {"l2": float(per_image["jac_z_2inf"].max()), "linf": float(per_image["jac_z_infinf"].max())}
    for norm in ("l2", "linf"):
        per_image[f"certified_{norm}"] = radius(per_image["margin"], bounds.get(norm))
        per_image[f"estimate_{norm}"] = radius(per_image["margin"], measured_lipschitz[norm])
    statistics = Statistics(labels, predictions, {name: per_image[name] for name in PER_IMAGE})
    statistics.summary = summarise(statistics, bounds, unavailable, measured_lipschitz, eps)
    return statistics


def _bounds(model: nn.Module, info: DatasetInfo) -> tuple[dict[str, float], str | None]:
    """``{norm: U_norm}`` for l2, linf, l1, or ``({}, why)`` when the model has a part without a rule."""
    try:
        return {norm: product_bound(model, info.input_shape, norm) for norm in ("l2", "linf", "l1")}, None
    except BoundUnavailable as exc:
        return {}, str(exc)


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z_label - max_{j != label} z_j`` per image (negative when misclassified)."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], -torch.inf).amax(dim=1)
    return own - others


def radius(margin: torch.Tensor, lipschitz: float | None) -> torch.Tensor:
    """Eq. (2): ``max(margin, 0) / (2 L)``; NaN for every image when L is unknown."""
    if lipschitz is None:
        return torch.full_like(margin, math.nan)
    if lipschitz == 0:  # a constant model: nothing changes its label, and a misclassified image is at 0
        return torch.where(margin > 0, torch.inf, 0.0).to(margin.dtype)
    return margin.clamp_min(0) / (2 * lipschitz)


def _stats(values: torch.Tensor) -> dict[str, float]:
    return {"mean": float(values.mean()), "max": float(values.max())}


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summarise(
    statistics: Statistics, bounds: dict[str, float], unavailable: str | None, measured_lipschitz: dict[str, float],
    eps: dict[str, list[tuple[str, float]]],
) -> dict[str, Any]:
    """The stats.json content: measured maxima with their bounds, radii, and Lemma 2.2's predictions."""
    columns = statistics.per_image
    u2, uinf, u1 = bounds.get("l2"), bounds.get("linf"), bounds.get("l1")

    def scaled(factor: float, u: float | None) -> float | None:
        return None if u is None else _number(factor * u)

    mean_loss = float(columns["loss"].mean())
    loss_lipschitz = {"l2": scaled(LOSS_L2, u2), "linf": scaled(LOSS_L1, uinf)}
    dual = {"l2": "grad_loss_l2", "linf": "grad_loss_l1"}
    predictions = {
        norm: [
            {
                "eps": text, "value": value,
                "expected_loss": mean_loss + value * float(columns[dual[norm]].mean()),
                "worst_case_loss_estimate": mean_loss + value * float(columns[dual[norm]].max()),
                "worst_case_loss_bound": None if loss_lipschitz[norm] is None
                else _number(mean_loss + value * loss_lipschitz[norm]),
            }
            for text, value in points
        ]
        for norm, points in eps.items()
    }

    def radii(prefix: str) -> dict[str, dict[str, float | None]]:
        return {norm: {"median": _number(float(columns[f"{prefix}_{norm}"].median())),
                       "mean": _number(float(columns[f"{prefix}_{norm}"].mean()))} for norm in ("l2", "linf")}

    return {
        "images": int(statistics.labels.numel()),
        "clean_error": float((statistics.predictions != statistics.labels).double().mean()),
        "loss": mean_loss,
        "grad_loss_l2": _stats(columns["grad_loss_l2"]),
        "grad_loss_l1": _stats(columns["grad_loss_l1"]),
        "jac_f_2inf_max": float(columns["jac_f_2inf"].max()),
        "jac_f_11_max": float(columns["jac_f_11"].max()),
        "jac_z_2inf_max": measured_lipschitz["l2"],
        "jac_z_infinf_max": measured_lipschitz["linf"],
        "bound": {
            "unavailable": unavailable,
            "logits_l2": scaled(1.0, u2),
            "logits_linf": scaled(1.0, uinf),
            "logits_l1": scaled(1.0, u1),
            "grad_loss_l2": loss_lipschitz["l2"],
            "grad_loss_l1": loss_lipschitz["linf"],
            "jac_f_2inf": scaled(SOFTMAX_2INF, u2),
            "jac_f_11": scaled(SOFTMAX_11, u1),
            "jac_z_2inf": scaled(1.0, u2),
            "jac_z_infinf": scaled(1.0, uinf),
        },
        "certified_radius": radii("certified") if not unavailable else None,
        "estimated_radius": radii("estimate"),
        "lemma_2_2": predictions,
    }
