"""The Gradio page of `hf-advft app` (the panels are computed by `hf_advft.app`) and its command line.

    hf-advft app ./vit-robust --dataset digits --port 7860
    hf-advft app me/vit-robust --base google/vit-base-patch16-224 --host 0.0.0.0

The page loads the models once. An attack holds the page's single attack slot (Gradio's queue, `concurrency_limit=1`)
for at most `MAX_STEPS` forward+backward passes per model and reports each step; picking or uploading an image runs
outside that slot, so nobody waits for someone else's attack longer than that attack. Nothing is fetched from the
internet: analytics and the version check are off, and the default theme's fonts are served by the app itself.
"""

# No `from __future__ import annotations`: Gradio reads the `gr.SelectData` annotation of a handler at run time.
import argparse
import logging as std_logging
import os
import tempfile
from pathlib import Path

from .app import (
    APP_EXTRA_HINT,
    DISPLAY_SIDE,
    MAX_IMAGE_PIXELS,
    MAX_STEPS,
    TOP_K,
    AppInputError,
    describe_epsilon,
    display_image,
    load_app_model,
    parse_epsilon,
    read_image,
    robustness_panel,
    run_attacks,
)


__all__ = ["add_app_command", "build_app", "launch_app"]

logger = std_logging.getLogger(__name__)

MAX_UPLOAD_SIZE = "20mb"  # Gradio refuses bigger uploads before they reach our code
QUEUE_SIZE = 32  # attacks waiting beyond this are refused with Gradio's "queue is full" message
DEFAULT_EXAMPLES = 12
CSS = "#hf-advft-message strong {color: var(--error-text-color)}"


def _import_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before the import: gradio reads it at import time
    try:
        import gradio as gr
    except ImportError as err:
        raise ImportError(APP_EXTRA_HINT) from err
    return gr


def _load_examples(dataset: str, n: int):
    from .data import load_image_dataset, to_pil

    data = load_image_dataset(dataset, max_eval_samples=n)
    rows = data.eval.select(range(min(n, len(data.eval))))
    examples = [(to_pil(image), int(label)) for image, label in zip(rows[data.pixel_key], rows[data.label_key])]
    return examples, data.label_names


def build_app(model: str, *, base: str | None = None, dataset: str | None = None,
              n_examples: int = DEFAULT_EXAMPLES, device: str | None = None):
    """The `gradio.Blocks` page: pick or upload an image, attack, compare. Errors are shown on the page.

    A model that cannot be loaded (a folder without weights, a wrong id) or a dataset that cannot be read leaves the
    page up with the loader's message in place of what is missing.
    """
    gr = _import_gradio()
    problems, examples, label_names = [], [], None
    if dataset:
        try:
            examples, label_names = _load_examples(dataset, n_examples)
        except (ValueError, OSError) as err:
            problems.append(f"The dataset {dataset!r} could not be read: {err}")
    models, roles = [], []
    for role, name in (("Robust model", model), ("Base model", base)):
        if not name:
            continue
        try:
            models.append(load_app_model(name, label_names=label_names, device=device))
            roles.append(role)
        except (ValueError, OSError) as err:
            problems.append(f"The {role.lower()} {name!r} could not be loaded: {err}")
            logger.error(problems[-1])
    out_dir = tempfile.mkdtemp(prefix="hf-advft-app-")
    folder = models[0].path if models and roles[0] == "Robust model" else None
    curve_png, curve_text = robustness_panel(folder, out_dir)
    labels_of = {i: label_names[y] for i, (_, y) in enumerate(examples)} if label_names else {}

    def pick_example(evt: gr.SelectData):
        image, label = examples[evt.index]
        return (display_image(_as_tensor(image)), {"example": evt.index},
                f"Example #{evt.index} (label {labels_of.get(evt.index, label)}): press Attack.")

    def take_upload(path):
        # The upload box is emptied each time (the image shows in the preview), ready for the next file.
        if path is None:
            return gr.skip(), gr.skip(), gr.skip(), None
        try:
            image = read_image(path)
        except AppInputError as err:
            return None, None, f"**{err}**", None
        return display_image(_as_tensor(image)), {"upload": path}, "Uploaded image: press Attack.", None

    def show_epsilon(text, norm):
        try:
            return f"ε = {describe_epsilon(parse_epsilon(text), norm)}"
        except AppInputError as err:
            return f"**{err}**"

    def attack(chosen, epsilon, steps, norm, progress=gr.Progress()):  # noqa: B008 (how Gradio injects progress)
        empty = [gr.skip()] * (6 * len(models))
        if not models:
            return ["**No model to attack:** " + " ".join(problems), *empty]
        chosen = chosen or {}
        image, label = (examples[chosen["example"]] if "example" in chosen else (chosen.get("upload"), None))
        label = label_names[label] if label is not None and label_names else None  # matched to each model by name

        def on_step(i, done, total):
            progress((done, total), desc=f"PGD step {done}/{total} on the {roles[i].lower()}")

        try:
            panels = run_attacks(models, image, epsilon, steps, norm, label=label, on_step=on_step)
        except AppInputError as err:
            return [f"**{err}**", *empty]
        except Exception as err:  # the server keeps serving: the page says what failed, the log has the traceback
            logger.exception("The attack failed")
            return [f"**The attack failed:** {type(err).__name__}: {err}", *empty]
        outputs = [f"Attacked with {norm} ε = {describe_epsilon(parse_epsilon(epsilon), norm)}, {int(steps)} steps."]
        for panel in panels:
            outputs += [panel.caption(), panel.clean, panel.perturbation, panel.adversarial, panel.clean_top,
                        panel.adversarial_top]
        return outputs

    title = f"See robustness: {Path(model).name if os.path.isdir(model) else model}"
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        chosen = gr.State(None)
        gr.Markdown(f"# {title}\nPick an example or upload an image, choose the attack, press **Attack**: PGD "
                    f"(`hf_advft.pgd`) searches the ε-ball around the image for the change that most hurts each "
                    f"model, white-box, on that model alone.")
        if problems:
            gr.Markdown("\n\n".join(f"**{p}**" for p in problems), elem_id="hf-advft-problems")
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    with gr.Column(scale=2):
                        preview = gr.Image(label="Image", interactive=False, height=DISPLAY_SIDE, format="png",
                                           elem_id="hf-advft-preview")
                        upload = gr.File(label=f"Or upload an image (at most {MAX_IMAGE_PIXELS:,} pixels)",
                                         type="filepath", elem_id="hf-advft-upload", height=110)
                    if examples:
                        gallery = gr.Gallery([display_image(_as_tensor(im), 64) for im, _ in examples],
                                             label=f"Examples from {dataset}: click one", columns=3, scale=3,
                                             allow_preview=False, height=DISPLAY_SIDE + 110, object_fit="contain",
                                             elem_id="hf-advft-examples")
                with gr.Row():
                    epsilon = gr.Textbox("8/255", label="Epsilon (pixel units, in (0, 1])", elem_id="hf-advft-eps")
                    steps = gr.Slider(1, MAX_STEPS, value=10, step=1, label="PGD steps")
                    norm = gr.Radio(["linf", "l2"], value="linf", label="Norm")
                eps_info = gr.Markdown(show_epsilon("8/255", "linf"))
                button = gr.Button("Attack", variant="primary", elem_id="hf-advft-attack")
                message = gr.Markdown(elem_id="hf-advft-message")
            with gr.Column(scale=2):
                gr.Image(curve_png, label="Robustness curve", interactive=False, visible=curve_png is not None,
                         elem_id="hf-advft-curve")
                gr.Markdown(curve_text)
        panel_outputs = []
        for role, loaded in zip(roles, models):
            with gr.Group():
                gr.Markdown(f"### {role}: `{loaded.name}`")
                caption = gr.Markdown(elem_classes="hf-advft-caption")
                with gr.Row(equal_height=True):
                    images = [gr.Image(label=name, interactive=False, format="png", height=DISPLAY_SIDE)
                              for name in ("Model input", "Perturbation (amplified)", "Adversarial image")]
                    tops = [gr.Label(num_top_classes=TOP_K, label=f"Top-{TOP_K} {when}")
                            for when in ("before the attack", "after the attack")]
            panel_outputs += [caption, *images, *tops]
        # Picking, uploading and the epsilon preview are cheap: no concurrency limit, so they never queue behind an
        # attack. Attacks share one slot: two at once would only split the same CPU/GPU between them.
        light = {"concurrency_limit": None, "show_progress": "hidden"}
        if examples:
            gallery.select(pick_example, None, [preview, chosen, message], **light)
        upload.upload(take_upload, upload, [preview, chosen, message, upload], **light)
        for trigger in (epsilon.change, norm.change):
            trigger(show_epsilon, [epsilon, norm], eps_info, **light)
        button.click(attack, [chosen, epsilon, steps, norm], [message, *panel_outputs], concurrency_limit=1,
                     concurrency_id="attack")
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return demo


def _as_tensor(image):
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)


def launch_app(model: str, *, base: str | None = None, dataset: str | None = None, server_name: str = "127.0.0.1",
               server_port: int | None = None, n_examples: int = DEFAULT_EXAMPLES, device: str | None = None,
               **launch_kwargs):
    """Build the page and serve it on `server_name:server_port` until interrupted.

    With `prevent_thread_lock=True` (a `gradio.Blocks.launch` argument, like every other keyword) it returns at once
    and serves in the background; the returned `gradio.Blocks` stops with `.close()`.
    """
    gr = _import_gradio()
    demo = build_app(model, base=base, dataset=dataset, n_examples=n_examples, device=device)
    # ssr_mode=False: no Node server; the default theme's fonts are LocalFont files served by the app itself.
    demo.launch(server_name=server_name, server_port=server_port, max_file_size=MAX_UPLOAD_SIZE, ssr_mode=False,
                theme=gr.themes.Default(), css=CSS, **launch_kwargs)
    return demo


def add_app_command(subparsers) -> None:
    parser = subparsers.add_parser("app", help="A local web page that attacks the model (and its base) live.",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="The robust model: a saved folder or a Hub repo id.")
    parser.add_argument("--base", default=None, help="A base (not robust) model to attack beside it.")
    parser.add_argument("--dataset", default=None, help="Where the example images come from: 'digits', "
                                                        "'fashion_mnist', an imagefolder, a save_to_disk folder or a "
                                                        "Hub id (its eval split).")
    parser.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES, help="How many examples to offer.")
    parser.add_argument("--host", default="127.0.0.1", help="Address to serve on (0.0.0.0: the whole network).")
    parser.add_argument("--port", type=int, default=None, help="Port (default: Gradio's, 7860 or the next free).")
    parser.add_argument("--device", default=None, help="'cpu', 'cuda', ... Default: cuda when available.")
    parser.set_defaults(func=_run_app)


def _run_app(args) -> int:
    # Without gradio, the ImportError (with its install hint) is one line and exit status 2, as every user error of
    # `hf-advft` (`hf_advft.cli.run_guarded`).
    launch_app(args.model, base=args.base, dataset=args.dataset, server_name=args.host, server_port=args.port,
               n_examples=args.examples, device=args.device)
    return 0
