"""One SHA-256 for a set of weights, computable from a model in memory and from a saved folder alike.

Every evaluation hf-advft records carries this hash (`weights_sha256`) of the weights it measured, and a card is
rendered only with the numbers whose hash matches the weights beside it (`hf_advft.model_card`).

The hash is taken over the tensors' *contents*, not their names or order: the SHA-256 of the sorted, de-duplicated
SHA-256s of each tensor's dtype, shape and bytes. Names are left out because a save may rename keys
(transformers' key mappings) or drop a tied weight that shares its storage with another (`save_pretrained` keeps
one); both sides then still hash the same bytes. The cost is one pass over the weights on the CPU (about 0.5 s for
a ViT-B/16's 344 MB); two tensors of one shape swapping places would go unnoticed, a change we do not guard against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import torch


__all__ = ["folder_weights_sha256", "model_weights_sha256", "tensors_sha256"]

SAFE_WEIGHTS_FILE = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"


def _tensor_digest(tensor: torch.Tensor) -> str:
    tensor = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    if tensor.numel():
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tensors_sha256(tensors: Iterable[torch.Tensor]) -> str:
    """The weights hash of `tensors` (any order; a tensor repeated, as a tied weight is, counts once)."""
    digests = sorted({_tensor_digest(t) for t in tensors})
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def model_weights_sha256(model: torch.nn.Module) -> str:
    """The weights hash of `model.state_dict()` (parameters and persistent buffers), as saved by `save_pretrained`,
    timm's `save_for_hf` or `safetensors.torch.save_file(model.state_dict())`."""
    return tensors_sha256(model.state_dict().values())


def folder_weights_sha256(folder: str | Path) -> str | None:
    """The weights hash of a folder's safetensors (`model.safetensors` or the shards its index names).

    Returns `None` when the folder has no safetensors weights (pickle files are never opened to be hashed).
    """
    import json

    from safetensors import safe_open

    folder = Path(folder)
    if (folder / SAFE_WEIGHTS_FILE).is_file():
        files = [folder / SAFE_WEIGHTS_FILE]
    elif (folder / SAFE_WEIGHTS_INDEX).is_file():
        index = json.loads((folder / SAFE_WEIGHTS_INDEX).read_text(encoding="utf-8"))
        files = [folder / name for name in sorted(set(index.get("weight_map", {}).values()))]
    else:
        return None

    def tensors():
        for path in files:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():
                    yield f.get_tensor(key)

    return tensors_sha256(tensors())


def short(sha256: str) -> str:
    return sha256[:12]


def bind_evaluation(evaluation, weights_sha256: str | None):
    """Keep an evaluation record only if it measured the weights `weights_sha256`; say why when it is left out.

    `evaluation` is an `hf_advft.model_card_record.EvaluationRecord`. Returns `(evaluation or None, note)`. `weights_sha256=None` (the weights are unknown, e.g. pickle files) checks
    nothing. A record that carries no hash (an older hf-advft, a record typed by hand, sharded training) is kept
    with a note that it could not be checked.
    """
    if evaluation is None or weights_sha256 is None:
        return evaluation, None
    measured = evaluation.weights_sha256
    if measured is None:
        return evaluation, ("This evaluation records no hash of the weights it measured, so it could not be checked "
                            "against these weights.")
    if measured != weights_sha256:
        return None, (f"An evaluation recorded in adv_results.json measured other weights (SHA-256 "
                      f"{short(measured)}…) than the ones beside this card ({short(weights_sha256)}…): its numbers "
                      f"are left out. "
                      f"Evaluate these weights and save again.")
    return evaluation, None
