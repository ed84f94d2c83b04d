"""Training speed: iterations/s and images/s of the real model and trainer, fed with the
built-in example photos, split into rendering the training pair and the G/D step.

    python benchmarks/train.py                          # tiny and default configs on CPU
    python benchmarks/train.py --config default --device cuda --batch 8     # + peak memory

Each figure is the median over --iters iterations after --warmup. ``--vgg random`` (the
default) writes random weights in torchvision's VGG19 layout to a temporary file (80 MB) so
the perceptual loss costs what it costs in a real run; ``--vgg none`` trains without it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
from torch.utils.data import default_collate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import create_dataset  # noqa: E402
from models import create_model  # noqa: E402
from options.base_options import resolve_device  # noqa: E402
from options.train_options import TrainOptions, bf16_supported  # noqa: E402
from trainers.trainer import Trainer  # noqa: E402

# experiments/train.sh's loss settings (the original's) and its CPU recipe's networks.
TRAIN_SH_LOSSES = ["--label_nc", "5", "--heatmap_size", "2.5", "--no_gaussian_landmark",
                   "--erode_kernel", "15", "--pose_noise", "--train_rotate", "--lambda_D",
                   "0.75", "--lambda_rotate_D", "0.001", "--lambda_feat", "10"]
CPU_NETS = ["--netG", "blend", "--ngf", "16", "--n_downsample_G", "4", "--n_blocks_G", "2",
            "--num_D", "1", "--n_layers_D", "3", "--ndf", "16", "--lambda_l1", "10",
            "--erode_kernel", "15", "--pose_noise", "--lambda_D", "0.75"]
# train.sh's CPU step: D learns from the G step's output; bf16 autocast where the CPU has it.
CPU_RECIPE = CPU_NETS + ["--reuse_fake"] + (["--bf16"] if bf16_supported("cpu") else [])

CONFIGS = {
    # experiments/train_tiny_cpu.sh
    "tiny": dict(flags=["--ngf", "8", "--ndf", "8", "--n_blocks_G", "1", "--crop_size", "64",
                        "--n_downsample_G", "2", "--num_D", "1", "--n_layers_D", "2"],
                 spade_flags=["--spade_nhidden", "8"], cpu_batch=2),
    # The defaults: 256 px, ngf 64, 9 SPADE blocks, two 4-layer discriminators.
    "default": dict(flags=[], spade_flags=[], cpu_batch=1),
    # experiments/train.sh without a GPU before the blend generator: rotatespade at 128 px.
    "cpu_spade128": dict(flags=["--crop_size", "128", "--ngf", "32", "--ndf", "32",
                                "--n_blocks_G", "4", *TRAIN_SH_LOSSES],
                         spade_flags=["--spade_nhidden", "64"], cpu_batch=2),
    # experiments/train.sh without a GPU: the blend generator (CPU_RECIPE), U-Net at 128 px.
    "cpu128": dict(flags=["--crop_size", "128", "--no_blend_downsample", *CPU_RECIPE],
                   spade_flags=[], cpu_batch=8, model="rotate"),
    # The same networks with SPADE's float32 step (G runs again for the D step): the recipe
    # shipped model v4 was trained with.
    "cpu128_fp32": dict(flags=["--crop_size", "128", "--no_blend_downsample", *CPU_NETS],
                        spade_flags=[], cpu_batch=8, model="rotate"),
    # The same with the U-Net at half resolution (64 px), blended at 128.
    "cpu128_half": dict(flags=["--crop_size", "128", *CPU_RECIPE], spade_flags=[],
                        cpu_batch=8, model="rotate"),
    # 256-px crops, U-Net at half resolution (128 px: the scale cpu128 trains it at).
    "cpu256": dict(flags=["--crop_size", "256", *CPU_RECIPE], spade_flags=[], cpu_batch=8,
                   model="rotate"),
}


def random_vgg_file(folder: str) -> str:
    from models.networks.architecture import vgg19_features, vgg19_weights_filename

    path = os.path.join(folder, vgg19_weights_filename())
    if not os.path.exists(path):
        state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
        torch.save(state, path)
    return path


def batches(dataset, size: int):
    """Endless batches of ``size`` photos, cycling through the dataset."""
    i = 0
    while True:
        items = [dataset[(i + k) % len(dataset)] for k in range(size)]
        i += size
        yield default_collate(items)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, args, vgg_path: str | None) -> dict:
    cfg = CONFIGS[name]
    device = resolve_device(args.device)
    batch = args.batch or (cfg["cpu_batch"] if device.type == "cpu" else 8)
    model_name = cfg.get("model", args.model)
    spade = cfg["spade_flags"] if model_name == "rotatespade" else []
    argv = cfg["flags"] + spade + ["--model", model_name, "--batchSize", str(batch),
                                   "--nThreads", "0", "--device", str(device),
                                   "--dataset", "example"]
    argv += ["--vgg_weights", vgg_path] if vgg_path else ["--no_vgg_loss"]
    argv += args.extra
    opt = TrainOptions().parse(argv)
    torch.manual_seed(0)
    t = time.perf_counter()
    model = create_model(opt)
    trainer = Trainer(opt, model, device)
    sync(device)
    create_s = time.perf_counter() - t
    dataset = create_dataset(opt)
    feed = batches(dataset, batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = {"load": [], "render": [], "step": [], "total": []}
    for it in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        data = next(feed)
        t1 = time.perf_counter()
        pair = model.make_pair(data, torch.Generator().manual_seed(it))
        sync(device)
        t2 = time.perf_counter()
        losses, _ = trainer.step(pair)  # float() of the losses waits for the device
        sync(device)
        t3 = time.perf_counter()
        if it >= args.warmup:
            times["load"].append(t1 - t0)
            times["render"].append(t2 - t1)
            times["step"].append(t3 - t2)
            times["total"].append(t3 - t1)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = dict(config=name, model=opt.model, device=str(device), batch=batch,
               crop_size=opt.crop_size, vgg=bool(vgg_path), iters=args.iters,
               create_s=round(create_s, 3),
               render_s=round(med["render"], 4), step_s=round(med["step"], 4),
               load_s=round(med["load"], 4),
               iters_per_s=round(1 / med["total"], 3),
               images_per_s=round(batch / med["total"], 3))
    graphed = getattr(model, "_graphed_pair", None)
    out["render_graph_captures"] = graphed.captures if graphed is not None else 0
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        out["gpu"] = torch.cuda.get_device_name(device)
    else:
        out["threads"] = torch.get_num_threads()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", nargs="+", choices=[*CONFIGS, "both"], default=["both"],
                   help="one or more of: tiny (experiments/train_tiny_cpu.sh), default (256 px), "
                        "cpu_spade128 (train.sh's CPU recipe before the blend generator), "
                        "cpu128 (train.sh's CPU recipe), cpu128_fp32 (its float32 SPADE step, "
                        "shipped model v4's), cpu128_half, cpu256; "
                        "both = tiny and default")
    p.add_argument("--model", default="rotatespade",
                   help="rotate or rotatespade (the cpu128/cpu256 configs fix their own)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--batch", type=int, default=None,
                   help="photos per step (default: tiny 2, default 1 on CPU; 8 on CUDA)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed iterations (default: 20 tiny, 5 default on CPU, 20 on CUDA)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    p.add_argument("--vgg", default="random",
                   help="random (random weights in a temp file), none, or a weights file")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print one JSON object per config")
    p.add_argument("extra", nargs="*", help="further train.py flags, after --")
    args = p.parse_args(argv)
    try:
        resolve_device(args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for c in args.config for n in (("tiny", "default") if c == "both" else (c,))]
    iters_given = args.iters
    with tempfile.TemporaryDirectory() as tmp:
        vgg_path = None
        if args.vgg == "random":
            vgg_path = random_vgg_file(tmp)
        elif args.vgg != "none":
            vgg_path = args.vgg
        for name in names:
            slow = name in ("default", "cpu_spade128")
            args.iters = iters_given or (5 if slow and args.device == "cpu" else 20)
            r = bench(name, args, vgg_path)
            if args.json:
                print(json.dumps(r), flush=True)
                continue
            mem = (f", peak {r['peak_memory_gib']} GiB on {r['gpu']}"
                   if "peak_memory_gib" in r else f", {r['threads']} threads")
            if r["render_graph_captures"]:
                mem += f"; pairs rendered by a CUDA graph, {r['render_graph_captures']} capture(s)"
            print(f"{name:>8} {r['model']} {r['crop_size']}px batch {r['batch']} on "
                  f"{r['device']}{' +VGG' if r['vgg'] else ''}: "
                  f"{r['iters_per_s']:.3f} it/s, {r['images_per_s']:.3f} images/s "
                  f"(median of {r['iters']}: render pair {r['render_s'] * 1e3:.1f} ms, "
                  f"G/D step {r['step_s'] * 1e3:.1f} ms, data {r['load_s'] * 1e3:.1f} ms; "
                  f"model created in {r['create_s']:.2f} s{mem})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
