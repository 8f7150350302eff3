"""`hf-advft push` and `hf-advft card`: share a saved robust checkpoint, or check its model card first.

    hf-advft card outputs/run/checkpoint-500                     # print the card rendered from the folder's files
    hf-advft card outputs/run --repo-id me/vit-robust -o card.md # as it will read on the Hub
    hf-advft push outputs/run --repo-id me/vit-robust            # upload weights, configs, adv_config.json, card
    hf-advft push outputs/run --repo-id me/vit-robust --with-app --app-dataset digits  # + a Space-ready app.py

The token comes from `huggingface-cli login` (or `hf auth login`) or the HF_TOKEN environment variable; `--token`
works too, but leaves it in your shell history.
"""

from __future__ import annotations

import sys
from pathlib import Path

from huggingface_hub.errors import LocalTokenNotFoundError


def add_card_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "card", help="Render the robust model card of a saved folder (from adv_config.json and adv_results.json)."
    )
    parser.add_argument("path", help="A folder saved by AdvTrainer or save_robust_model (a checkpoint-N works).")
    parser.add_argument("--repo-id", default=None, help="The Hub repo the card is meant for (used in its snippet).")
    parser.add_argument("-o", "--output", default=None, help="Write the card to this file instead of stdout.")
    parser.set_defaults(func=_card)


def add_push_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "push", help="Push a saved robust checkpoint to the Hub: weights, configs, adv_config.json and the card."
    )
    parser.add_argument("path", help="A folder saved by AdvTrainer or save_robust_model (a checkpoint-N works).")
    parser.add_argument("--repo-id", required=True, help="The Hub repo to push to, e.g. me/vit-base-robust.")
    parser.add_argument("--token", default=None, help="A Hub token with write access (default: the logged-in one).")
    parser.add_argument("--private", action="store_true", help="Create the repo private (if it does not exist).")
    parser.add_argument("--revision", default=None, help="The branch to push to (default: main).")
    parser.add_argument("--commit-message", default=None, help="The commit message.")
    parser.add_argument("--create-pr", action="store_true", help="Open a pull request instead of committing.")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="Also push pytorch_model.bin when there is no model.safetensors (pickle: trusted only).")
    parser.add_argument("--with-app", action="store_true",
                        help="Also upload app.py and requirements.txt: `hf-advft app` for this repo, ready to copy "
                             "into a Gradio Space (see hf_advft.app.space_files).")
    parser.add_argument("--app-base", default=None, help="With --with-app: a base model the app attacks beside it.")
    parser.add_argument("--app-dataset", default=None, help="With --with-app: where the app's examples come from.")
    parser.set_defaults(func=_push)


def _card(args) -> int:
    from .hub import render_folder_card

    if not Path(args.path).is_dir():
        return _fail("card", f"{args.path!r}: no such directory. Pass the directory a model was saved to.")
    text = str(render_folder_card(args.path, repo_id=args.repo_id))
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _push(args) -> int:
    from .app import space_files
    from .hub import push_checkpoint

    extra = space_files(args.repo_id, base=args.app_base, dataset=args.app_dataset) if args.with_app else None
    try:
        info = push_checkpoint(args.path, args.repo_id, token=args.token, private=args.private or None,
                               revision=args.revision, commit_message=args.commit_message, create_pr=args.create_pr,
                               allow_pickle=args.allow_pickle, extra_files=extra)
    except (ValueError, LocalTokenNotFoundError) as err:
        return _fail("push", str(err))
    sys.stdout.write(f"Pushed {args.path} to {args.repo_id}: {getattr(info, 'commit_url', info)}\n")
    return 0


def _fail(command: str, message: str) -> int:
    sys.stderr.write(f"hf-advft {command}: error: {' '.join(message.split())}\n")
    return 2  # argparse's status for a usage error, as every hf-advft command returns for a user's mistake
