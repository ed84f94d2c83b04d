"""Rotate a face in the browser: a Gradio app that runs offline on the CPU with the shipped
generator (or a model of your own).

    pip install -r requirements-demo.txt && pip install --no-deps gradio==6.31.0
    python demo.py                                  # then open http://127.0.0.1:7860
    python demo.py --name my_run                    # checkpoints/my_run/latest.pt
    python demo.py --checkpoint path/to/model.safetensors --port 8080

Upload a photo or pick a built-in example (public-domain portraits); the yaw and pitch
sliders turn the face. Shown side by side: the generator's output, the render it repaired
and what it was told about the render (grey seen in the photo, red hidden in it, blue
stretched: revealed behind the turning head). A photo is fitted once per upload; a slider
change only renders and runs the generator. The logic is util/demo_logic.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid

# Before Gradio is imported: it reads this once. No usage reports, no version check.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python demo.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to serve on; 0.0.0.0 makes the demo reachable from other "
                         "machines of your network (default: %(default)s, this machine only)")
    ap.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    ap.add_argument("--share", action="store_true",
                    help="also ask Gradio's relay servers for a public *.gradio.live link "
                         "(needs the internet; off by default, and nothing else needs it)")
    ap.add_argument("--device", default="cpu",
                    help="cpu (default), cuda, cuda:N or auto (cuda when available)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default: %(default)s: one frame is a small "
                         "network on one image, and on a 2-core machine with other work two "
                         "threads were 10x slower: benchmarks/demo.py)")
    model = ap.add_argument_group("model (default: the shipped pretrained/blend_lfw)")
    model.add_argument("--checkpoint", metavar="FILE",
                       help="a generator file: a training checkpoint (.pt) or an exported "
                            "generator (.safetensors with its .json)")
    model.add_argument("--name", help="a training run: uses CHECKPOINTS_DIR/NAME/WHICH.pt")
    model.add_argument("--checkpoints_dir", default="./checkpoints",
                       help="where --name's runs are (default: %(default)s)")
    model.add_argument("--which_epoch", default="latest",
                       help="--name's checkpoint: latest or an epoch number (default: "
                            "%(default)s)")
    args = ap.parse_args(argv)
    if args.checkpoint and args.name:
        ap.error("give --checkpoint or --name, not both")
    if args.threads < 1:
        ap.error(f"--threads {args.threads}: give 1 or more")
    if not 0 < args.port < 65536:
        ap.error(f"--port {args.port}: give a port in 1-65535")
    return args


def build_app(demo, gif_dir: str):
    """The Gradio Blocks of a ``util.demo_logic.Demo``."""
    import gradio as gr

    from util.demo_logic import EXAMPLES, Prepared

    def show(state, yaw, pitch):
        if not isinstance(state, Prepared):
            return None, None, None, ""
        f = demo.frame(state, yaw, pitch)
        return (f["output"], f["render"], f["masks"],
                f"{state.name} at yaw {round(yaw):+d}, pitch {round(pitch):+d}: "
                f"{100 * f['hidden']:.0f}% hidden, {100 * f['stretched']:.0f}% stretched")

    def use(state, yaw, pitch):
        if isinstance(state, str):  # a message, not a photo
            gr.Warning(state)
            return None, None, None, None, None, f"**{state}**"
        out = show(state, yaw, pitch)
        fit = state.fit
        return (state, state.crop, *out[:3], f"{out[3]} (the photo: yaw {round(fit.yaw):+d}, "
                                              f"pitch {round(fit.pitch):+d})")

    def upload(path, yaw, pitch):
        if path is None:  # the file was cleared
            return None, None, None, None, None, ""
        return use(demo.prepare(path), yaw, pitch)

    def sweep(state):
        if not isinstance(state, Prepared):
            gr.Warning("upload a photo or pick an example first")
            return None
        # one file per click: two sessions sweeping photos of the same name never collide;
        # those older than an hour go, so a demo left running does not fill the disk
        for old in os.scandir(gif_dir):
            if old.name.endswith(".gif") and time.time() - old.stat().st_mtime > 3600:
                os.remove(old.path)
        path = os.path.join(gif_dir, f"{os.path.splitext(state.name)[0]}_sweep_"
                                     f"{uuid.uuid4().hex[:8]}.gif")
        return demo.sweep_gif(state, path)

    # delete_cache: Gradio keeps a copy of every image it sent; drop those older than an hour
    with gr.Blocks(title="Rotate-and-Render", delete_cache=(3600, 3600)) as app:
        gr.Markdown("## Rotate-and-Render: turn a face to another pose\n"
                    f"Model: {demo.description}. Upload a photo with one face, or pick an "
                    "example; the photo is fitted once, the sliders only re-render.")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.File(label="Photo", file_types=["image"], elem_id="photo")
                gr.Markdown("or an example (public-domain portraits):")
                with gr.Row():
                    examples = [gr.Button(label, size="sm") for label in EXAMPLES]
                aligned = gr.Image(label="Aligned input", interactive=False, height=200,
                                   buttons=["fullscreen"])
                yaw = gr.Slider(-90, 90, value=30, step=1, label="Yaw (degrees, > 0 turns "
                                "toward the image's right)", elem_id="yaw")
                pitch = gr.Slider(-45, 45, value=0, step=1,
                                  label="Pitch (degrees, > 0 looks up)", elem_id="pitch")
                gif_button = gr.Button("Yaw sweep GIF (-60 to 60)", elem_id="sweep_button")
            with gr.Column(scale=3):
                message = gr.Markdown(elem_id="message")
                with gr.Row():
                    # png: lossless (Gradio's default is webp); no "share" button (it uploads)
                    output, render, masks = (
                        gr.Image(label=label, interactive=False, format="png", elem_id=key,
                                 buttons=["download", "fullscreen"])
                        for key, label in (("output", "Output (generator)" if demo.model
                                            else "Output (no generator: the render)"),
                                           ("render", "Render (its input)"),
                                           ("masks", "Red hidden, blue stretched")))
                gif = gr.Image(label="Yaw sweep", interactive=False, type="filepath",
                               elem_id="sweep", buttons=["download", "fullscreen"])
        shown = [output, render, masks, message]
        photo.change(upload, [photo, yaw, pitch], [state, aligned, *shown], api_name="upload")
        for button, label in zip(examples, EXAMPLES):
            button.click(lambda y, p, label=label: use(demo.prepare_example(label), y, p),
                         [yaw, pitch], [state, aligned, *shown])
        for slider in (yaw, pitch):
            slider.change(show, [state, yaw, pitch], shown, trigger_mode="always_last",
                          show_progress="hidden", api_name="frame")
        gif_button.click(sweep, state, gif, api_name="sweep")
    return app


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import gradio as gr
    except ImportError:
        print("error: the web demo needs Gradio: pip install -r requirements-demo.txt && "
              "pip install --no-deps gradio==6.31.0", file=sys.stderr)
        return 2
    import torch

    from options.base_options import OptionsError, resolve_device
    from util.checkpoint import CheckpointError
    from util.demo_logic import Demo, load_model

    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        model, settings, description = load_model(args.checkpoint, args.name,
                                                  args.checkpoints_dir, args.which_epoch,
                                                  device)
    except (OptionsError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model: {description}", flush=True)
    demo = Demo(model, settings, device, description=description)
    demo.warm_up()
    with tempfile.TemporaryDirectory(prefix="rr_demo_") as gif_dir:
        app = build_app(demo, gif_dir)
        theme = gr.themes.Default()  # its fonts ship with Gradio: nothing from a CDN
        app.queue(default_concurrency_limit=1)  # one render at a time: the CPU is the limit
        try:
            # quiet: Gradio's banner would point to launch(share=True), not to --share
            app.launch(server_name=args.host, server_port=args.port, share=args.share,
                       theme=theme, allowed_paths=[gif_dir], footer_links=[], quiet=True,
                       prevent_thread_lock=True)
        except OSError as e:  # the port is taken, the host is not an address of this machine
            why = ("the port is in use: pick another with --port"
                   if "empty port" in str(e) else str(e))  # Gradio's names launch()'s args
            print(f"error: cannot serve on {args.host}:{args.port}: {why}", file=sys.stderr)
            return 2
        print(f"open {app.local_url}" + (f" or {app.share_url}" if app.share_url else "")
              + "  (Ctrl-C stops the demo)", flush=True)
        try:
            app.block_thread()
        except KeyboardInterrupt:
            pass
        finally:
            app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
