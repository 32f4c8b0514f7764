"""Throughput of one full training step: D step + G step (mask estimator, generator, VGG-19).

Prints steps/s and images/s at 64, 128 and 256 px, fp32 and bf16 autocast, on the CPU and, when
one is available, on the GPU. Batches are random tensors (the cost of a step does not depend on
the pixels), so the data pipeline is not part of the figure. Default run: a couple of minutes
on a 2-core CPU.

    python benchmarks/training.py                       # cnum 16, batch 4, CPU (+ GPU)
    python benchmarks/training.py --cnum 48 --batch 8 --sizes 256 --device cuda
    python benchmarks/training.py --recipe starter --sizes 64,128 --device cpu --no-vgg \
        --variants baseline,channels_last,threads1,compile    # CPU speed-ups, one run

``--variants`` times the same step several ways in one run, so their ratios are comparable:
``baseline``; ``channels_last`` (networks and batch in the channels-last memory layout, the
one oneDNN convolutions prefer; same numbers up to float rounding); ``threads1`` (one intra-op
thread instead of all cores); ``compile`` (``torch.compile`` of the three networks, inductor
backend; its compile time is excluded and printed, and a failure to compile is printed and
skipped). ``--recipe starter`` uses the starter's last-phase losses (GAN and VGG off, hole L1,
mask BCE and sketch edge on) instead of the full GAN step.
"""

from __future__ import annotations

import argparse
import time

import torch

from sketchedit import objective as O
from sketchedit.nets.blocks import cpu_low_precision_is_fast
from sketchedit.presets import get_config


def random_batch(b: int, s: int, device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    x = y.clone()
    x[:, :, s // 4 : s // 2, s // 4 : s // 2] = torch.rand(b, 3, s // 4, s // 4, generator=g)
    sketch = (torch.rand(b, 1, s, s, generator=g) > 0.98).float()
    changed = torch.zeros(b, 1, s, s)
    changed[:, :, s // 4 : s // 2, s // 4 : s // 2] = 1.0
    batch = {"input": x, "target": y, "sketch": sketch, "edges": sketch, "changed": changed}
    batch["hole"] = changed.clone()
    return {k: v.to(device) for k, v in batch.items()}


VARIANTS = ("baseline", "channels_last", "threads1", "compile")


def time_steps(cfg, device, steps: int, warmup: int, vgg, variant: str = "baseline") -> float:
    """Seconds per full step (mean over ``steps`` after ``warmup``) for one ``variant``."""
    torch.manual_seed(0)
    nets = {k: v.to(device) for k, v in O.build_networks(cfg).items()}
    optims = O.make_optimizers(cfg, nets)
    O.set_trainable(nets, "joint")
    batch = random_batch(cfg.batch_size, cfg.image_size, device)
    wrapped = nets  # what the step calls; the optimisers keep the original parameters
    if variant == "channels_last":
        for net in nets.values():
            net.to(memory_format=torch.channels_last)
        batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
    elif variant == "compile":
        wrapped = {k: torch.compile(v) for k, v in nets.items()}

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    threads = torch.get_num_threads()
    if variant == "threads1":
        torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        for i in range(max(warmup, 2 if variant == "compile" else 0)):
            O.gan_step(cfg, i, batch, nets, wrapped, optims, "joint", vgg, autocast)
        sync()
        if variant == "compile":
            print(f"  (compile + warm-up: {time.perf_counter() - t0:.0f} s)", flush=True)
        t0 = time.perf_counter()
        for i in range(steps):
            # mode 1 for every timed step: M, G (both stages), D and VGG all run
            O.gan_step(cfg, 1000 + i, batch, nets, wrapped, optims, "joint", vgg, autocast)
        sync()
        return (time.perf_counter() - t0) / steps
    finally:
        torch.set_num_threads(threads)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="64,128,256")
    p.add_argument("--cnum", type=int, default=16)
    p.add_argument("--disc-cnum", type=int, default=None)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="all", help="cpu, cuda or all (cpu + cuda if present)")
    p.add_argument(
        "--amp",
        default="auto",
        help="comma list of none,bf16; auto = both, except bf16 on a CPU without native bf16 "
        "convolutions (there PyTorch falls back to a naive conv, ~100x slower)",
    )
    p.add_argument("--no-vgg", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--variants", default="baseline", help=f"comma list of {','.join(VARIANTS)}")
    p.add_argument("--recipe", choices=("gan", "starter"), default="gan")
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    if args.threads:
        torch.set_num_threads(args.threads)
    # As in training: denormal activations of the 0.02-gain init slow CPU convs down a lot.
    torch.set_flush_denormal(True)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"cnum {args.cnum}, batch {args.batch}, VGG {'off' if args.no_vgg else 'on'}"
    )
    print(f"recipe: {args.recipe}")
    print(
        f"{'device':6} {'size':>5} {'amp':>5} {'variant':>13} {'s/step':>8} {'steps/s':>8} "
        f"{'images/s':>9} {'vs baseline':>11}"
    )
    for dev in devices:
        device = torch.device(dev)
        if dev == "cuda":
            torch.backends.cudnn.benchmark = True
        vgg = None
        if not args.no_vgg:
            from sketchedit.losses import VGGPerceptualLoss

            vgg = VGGPerceptualLoss().to(device).eval()
        for size in sizes:
            amps = args.amp.split(",")
            if args.amp == "auto":
                amps = ["none", "bf16"]
                if dev == "cpu" and not cpu_low_precision_is_fast(torch.bfloat16):
                    amps = ["none"]
                    if size == sizes[0]:
                        print(
                            "cpu: no native bf16 convolutions on this CPU (no AVX-512 BF16 / "
                            "AMX): bf16 autocast skipped",
                            flush=True,
                        )
            for amp in amps:
                recipe = (
                    {
                        "lambda_gan": 0.0,
                        "lambda_l1_hole": 5.0,
                        "lambda_mask_bce": 1.0,
                        "lambda_edge": 1.5,
                    }
                    if args.recipe == "starter"
                    else {}
                )
                cfg = get_config(
                    "tiny",
                    image_size=size,
                    cnum=args.cnum,
                    disc_cnum=args.disc_cnum or args.cnum,
                    batch_size=args.batch,
                    amp=amp,
                    lambda_vgg=0.0 if args.no_vgg else 10.0,
                    mode_probs=(0.0, 1.0, 0.0),
                    **recipe,
                )
                base = None
                for variant in variants:
                    try:
                        sec = time_steps(cfg, device, args.steps, args.warmup, vgg, variant)
                    except Exception as err:  # noqa: BLE001 - a failed compile is a result too
                        print(f"{dev:6} {size:5d} {amp:>5} {variant:>13}  failed: {err!r:.120}")
                        continue
                    base = sec if variant == "baseline" else base
                    ratio = f"{base / sec:10.2f}x" if base else ""
                    print(
                        f"{dev:6} {size:5d} {amp:>5} {variant:>13} {sec:8.3f} {1 / sec:8.2f} "
                        f"{args.batch / sec:9.1f} {ratio:>11}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
