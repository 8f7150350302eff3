"""Checkpoints that survive a kill: which checkpoint is complete, and the counters AdvTrainer carries across a resume.

transformers writes a checkpoint in place, file by file, into `checkpoint-<step>/`: the weights (and our
`adv_config.json`), then `optimizer.pt` / `scheduler.pt`, the RNG states, and `trainer_state.json` last. A job killed
in the middle leaves a folder that `transformers.trainer_utils.get_last_checkpoint` still picks (it only looks at the
folder name), and resuming from it fails. `last_complete_checkpoint` skips such folders, so
`AdvTrainer.train(resume_from_checkpoint=True)` resumes from the last checkpoint that was written to the end.
"""

from __future__ import annotations

import json
import os
import re

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging


logger = logging.get_logger(__name__)

__all__ = ["ComputeSpentCallback", "is_complete_checkpoint", "last_complete_checkpoint"]

TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` holds a checkpoint written to the end: a readable `trainer_state.json`, the file written last."""
    try:
        with open(os.path.join(path, TRAINER_STATE_NAME)) as f:
            return "global_step" in json.load(f)
    except (OSError, ValueError):
        return False


def last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """The `checkpoint-<step>` folder in `folder` with the highest step that is complete, or `None`.

    Unlike `transformers.trainer_utils.get_last_checkpoint`, a folder left half-written by a killed job is skipped
    (with a warning) instead of chosen.

    Example:

    ```python
    >>> import tempfile
    >>> from hf_advft.checkpointing import last_complete_checkpoint
    >>> last_complete_checkpoint(tempfile.mkdtemp()) is None
    True
    ```
    """
    if not os.path.isdir(folder):
        return None
    steps = sorted(
        ((int(m.group(1)), name) for name in os.listdir(folder) if (m := _CHECKPOINT_RE.match(name))), reverse=True
    )
    for _, name in steps:
        path = os.path.join(folder, name)
        if not os.path.isdir(path):
            continue
        if is_complete_checkpoint(path):
            return path
        logger.warning(
            f"Skipping {path}: it has no readable {TRAINER_STATE_NAME}, so its writing was interrupted. Resuming from "
            f"the previous complete checkpoint; delete the folder to silence this warning."
        )
    return None


class ComputeSpentCallback(TrainerCallback, ExportableState):
    """Carries AdvTrainer's cumulative `adv_attack_passes` / `adv_update_passes` in `trainer_state.json`.

    The trainer sets the totals (summed over processes) right before each checkpoint is written, and reads them back
    on resume, so that the counters continue where the checkpoint left them instead of restarting from 0. Added by
    `AdvTrainer` itself; there is nothing to pass.
    """

    def __init__(self, attack_passes: int = 0, update_passes: int = 0):
        self.attack_passes, self.update_passes = int(attack_passes), int(update_passes)

    def state(self) -> dict:
        return {"args": {"attack_passes": self.attack_passes, "update_passes": self.update_passes}, "attributes": {}}

    @classmethod
    def saved_in(cls, trainer_state) -> dict[str, int] | None:
        """The totals a resumed `TrainerState` carries, as `{"attack": ..., "update": ...}`, or `None`."""
        saved = (getattr(trainer_state, "stateful_callbacks", None) or {}).get(cls.__name__)
        if isinstance(saved, list):  # transformers stores a list when several callbacks share the class name
            saved = saved[-1] if saved else None
        if not isinstance(saved, dict):
            return None
        args = saved.get("args", {})
        return {"attack": int(args.get("attack_passes", 0)), "update": int(args.get("update_passes", 0))}
