"""Time per training step of the paper's defences side by side in one run, as ratios to J0, and how closely
the WCAT methods agree with the exact penalty on a trained model.

Targets (issue 14), on a CIFAR-style ResNet34, 32x32 inputs, batch 128: ``j2-lip`` with ``method = "worst"``
and with ``method = "fd"`` at most 2.0x ``j0``; ``j2-lip`` (``exact``, double backpropagation through the
batch) at most 3.0x.

Timing: the defences are timed in interleaved rounds (j0, j2, j2-lip, ..., j0, ...) so that machine noise
hits all of them alike; the ratio of medians is printed. Absolute times mean little on shared machines.

Agreement: a small CNN is trained with j2-lip on the digits for ``--agreement-epochs`` epochs; then, on
``--agreement-batches`` training batches (perturbed by J2 as the defence does), each method's penalty and
the weight gradient of its step's total loss (what the optimiser consumes) are compared with exact's.

    python benchmarks/bench_defences.py [--arch resnet34] [--batch 128] [--rounds 5] [--device cpu]
        [--set KEY=VALUE ...] [--agreement-epochs 10] [--agreement-batches 20] [--skip-timing]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from typing import Callable

import torch

from lipcli.checkpoint import load_checkpoint
from lipcli.config import resolve
from lipcli.config.schema import DefenceConfig
from lipcli.data.batches import iterate_batches
from lipcli.data.load import load_data
from lipcli.data.types import DatasetInfo
from lipcli.defence import ComposedDefence, build_defence
from lipcli.models.build import build_model
from lipcli.plugin_host import PluginHost
from lipcli.training.optim import build_optimizer
from lipcli.training.trainer import train
from lipcli.engine import make_engine

WCAT_METHODS = ("exact", "worst", "fd")
CANDIDATES = {
    "j0": [],
    "j2": ["defence.name=j2"],
    **{
        f"j2-lip {method}": ["defence.name=j2-lip", f"defence.options.wcat.method={method!r}"]
        for method in WCAT_METHODS
    },
}


def timing(args: argparse.Namespace, host: PluginHost, device: torch.device) -> None:
    """Print each candidate's median seconds per step and its ratio to j0."""
    info = DatasetInfo("bench", 3, 32, 32, 10)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, 32, 32, generator=generator).to(device)
    labels = torch.randint(0, 10, (args.batch,), generator=generator).to(device)
    if resolve(None, {}, args.overrides).training.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    steps: dict[str, Callable[[], None]] = {}
    for name, overrides in CANDIDATES.items():
        config = resolve(None, {}, [f"model.arch={args.arch}", *args.overrides, *overrides])
        defence = build_defence(config.defence, host, tanh_head=config.model.tanh_head)
        model = build_model(config, info, host, defence).to(device).train()
        if config.training.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, config.training)
        amp = config.training.amp and device.type == "cuda"

        def step(model=model, defence=defence, optimizer=optimizer, amp=amp) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = defence.training_loss(model, images, labels)
            optimizer.zero_grad(set_to_none=True)
            out.total.backward()
            optimizer.step()

        step()  # warm-up (allocator, lazy initialisation)
        steps[name] = step

    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)

    base = statistics.median(times["j0"])
    print(f"{args.arch}, batch {args.batch}, {device}, {args.rounds} interleaved rounds, "
          f"{torch.get_num_threads()} threads, overrides {args.overrides or 'none'}")
    print(f"{'defence':<16} {'median s/step':>14} {'ratio to j0':>12} {'images/s':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<16} {median:>14.3f} {median / base:>12.2f} {args.batch / median:>10.0f}")


def agreement(args: argparse.Namespace, host: PluginHost, device: torch.device) -> None:
    """Penalty and total-gradient agreement of each WCAT method with exact, on a j2-lip model trained here."""
    with tempfile.TemporaryDirectory() as folder:
        config = resolve(None, {}, [
            "data.dataset=digits", "defence.name=j2-lip", f"training.epochs={args.agreement_epochs}",
            "training.batch_size=128", "training.lr=0.05", f"training.device={device.type!r}",
            f"output.dir={folder + '/run'!r}",
        ])
        trained = train(config, make_engine(device, plugins=host))
        data = load_data(config.data, host)
        defences = {
            m: build_defence(DefenceConfig(name="j2-lip", options={"wcat": {"method": m}}), host,
                             tanh_head=config.model.tanh_head) for m in WCAT_METHODS
        }
        defences["j2"] = build_defence(DefenceConfig(name="j2"), host, tanh_head=config.model.tanh_head)  # no penalty
        model = build_model(config, data.info, host, defences["exact"]).to(device)
        model.load_state_dict(load_checkpoint(trained.run_dir / "last.pt")["model"])
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.train), generator=generator)
    rows: dict[str, list[tuple[float, ...]]] = {m: [] for m in WCAT_METHODS[1:]}
    batches = iterate_batches(data.train, 128, device, order)
    for _, (images, labels) in zip(range(args.agreement_batches), batches):
        results = {m: _penalty_and_gradient(d, model, images, labels) for m, d in defences.items()}
        data_gradient = results["j2"][1]
        exact_penalty, exact_total = results["exact"]
        for method in rows:
            penalty, total = results[method]
            rows[method].append((
                penalty / exact_penalty, _cosine(total, exact_total),
                _cosine(total - data_gradient, exact_total - data_gradient),
                float((total - data_gradient).norm() / (exact_total - data_gradient).norm()),
            ))
    print(f"\nagreement with exact: small-cnn trained {args.agreement_epochs} epochs with j2-lip on digits, "
          f"{args.agreement_batches} training batches of 128, median [min, max]; the penalty's gradient is the "
          "total's minus j2's on the same batch")
    headings = ("penalty / exact", "cos(total gradients)", "cos(penalty gradients)", "|penalty gradient| / exact")
    print(f"{'method':<8} " + " ".join(f"{h:>28}" for h in headings))
    for method, values in rows.items():
        cells = []
        for column in zip(*values):
            cells.append(f"{statistics.median(column):.4f} [{min(column):.4f}, {max(column):.4f}]")
        print(f"{method:<8} " + " ".join(f"{c:>28}" for c in cells))


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def _penalty_and_gradient(
    defence: ComposedDefence, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> tuple[float, torch.Tensor]:
    """(penalty or 0, flattened weight gradient of the total loss) of one step, on a copy of the model."""
    copied = copy.deepcopy(model).train()
    out = defence.training_loss(copied, images, labels)
    gradient = torch.autograd.grad(out.total, list(copied.parameters()))
    penalty = float(out.penalty) if out.penalty is not None else 0.0
    return penalty, torch.cat([g.flatten() for g in gradient]).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="configuration override for every timed candidate (e.g. training.amp=true)")
    parser.add_argument("--agreement-epochs", type=int, default=10)
    parser.add_argument("--agreement-batches", type=int, default=20, help="0 skips the agreement section")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    host, device = PluginHost(environ={}), torch.device(args.device)
    if not args.skip_timing:
        timing(args, host, device)
    if args.agreement_batches:
        agreement(args, host, device)


if __name__ == "__main__":
    main()
