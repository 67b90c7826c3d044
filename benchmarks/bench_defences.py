"""Time per training step of the paper's defences, side by side in one run, as ratios to J0.

Targets (issue 3): on a CIFAR-style ResNet, 32x32 inputs, batch 128, CPU: ``j2-lip`` (exact double
backpropagation) at most 3.0x ``j0``, and ``j2-lip`` with ``method = "fd"`` at most 2.0x ``j0``.

The defences are timed in interleaved rounds (j0, j2, j2-lip, j2-lip fd, j0, ...) so that machine noise
hits all of them alike; the ratio of medians is printed. Absolute times mean little on shared machines.

    python benchmarks/bench_defences.py [--arch resnet34] [--batch 128] [--rounds 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lipcli.config import resolve
from lipcli.data.types import DatasetInfo
from lipcli.models.build import build_model
from lipcli.plugins import PluginHost
from lipcli.training.defence import build_defence
from lipcli.training.optim import build_optimizer

CANDIDATES = {
    "j0": [],
    "j2": ["defence.name=j2"],
    "j2-lip": ["defence.name=j2-lip"],
    "j2-lip fd": ["defence.name=j2-lip", "defence.options.wcat.method='fd'"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="configuration override applied to every candidate (e.g. model.batchnorm_affine=true)")
    args = parser.parse_args()

    host = PluginHost(environ={})
    device = torch.device(args.device)
    info = DatasetInfo("bench", 3, 32, 32, 10)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, 32, 32, generator=generator).to(device)
    labels = torch.randint(0, 10, (args.batch,), generator=generator).to(device)

    steps = {}
    if resolve(None, {}, args.overrides).training.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    for name, overrides in CANDIDATES.items():
        config = resolve(None, {}, [f"model.arch={args.arch}", *args.overrides, *overrides])
        defence = build_defence(config.defence, host)
        model = build_model(config, info, host, defence).to(device).train()
        if config.training.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, config.training)

        def step(model=model, defence=defence, optimizer=optimizer) -> None:
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
    print(f"{args.arch}, batch {args.batch}, {device}, {args.rounds} interleaved rounds, {torch.get_num_threads()} threads")
    print(f"{'defence':<12} {'median s/step':>14} {'ratio to j0':>12}")
    for name, values in times.items():
        print(f"{name:<12} {statistics.median(values):>14.3f} {statistics.median(values) / base:>12.2f}")


if __name__ == "__main__":
    main()
