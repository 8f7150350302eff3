"""Training objectives: what the model minimises on adversarial (and clean) examples, and what the attack maximises.

- `"pgd_at"` (Madry et al. 2018): cross-entropy on PGD examples that maximise cross-entropy;
  `clean_loss_weight` w mixes in the clean loss: `(1 - w) * CE(adv) + w * CE(clean)`.
- `"trades"` (Zhang et al. 2019): `CE(clean) + beta * KL(p_clean || p_adv)`, the attack maximising the KL.
- `"mart"` (Wang et al., ICLR 2020): a boosted cross-entropy on the adversarial logits plus
  `beta * mean(KL(p_clean || p_adv) * (1 - p_clean[y]))`, which weighs the misclassified clean examples more; the
  attack maximises cross-entropy, as for PGD-AT.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


OBJECTIVES = ("pgd_at", "trades", "mart")


def kl_per_example(adv_logits: torch.Tensor, clean_probs: torch.Tensor) -> torch.Tensor:
    """KL(p_clean || p_adv) per example; the TRADES attack loss (`clean_probs` plays the role of the target)."""
    log_p_adv = F.log_softmax(adv_logits.float(), dim=-1)
    return F.kl_div(log_p_adv, clean_probs.float(), reduction="none").sum(dim=-1)


def mart_loss(adv_logits: torch.Tensor, clean_logits: torch.Tensor, labels: torch.Tensor,
              beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MART (Wang et al., ICLR 2020), as in the authors' code: `(loss, boosted_ce)`.

    `boosted_ce = CE(adv) - log(1 - max_{k != y} p_adv[k])`; `loss = boosted_ce + beta * mean(KL(p_clean || p_adv) *
    (1 - p_clean[y]))`. The `1.0001` and `1.0000001` offsets are the authors' (they keep the logs finite).
    """
    adv_probs = F.softmax(adv_logits.float(), dim=-1)
    others = adv_probs.scatter(1, labels[:, None], float("-inf"))
    top_other = others.max(dim=-1).values
    boosted_ce = F.cross_entropy(adv_logits.float(), labels) - torch.log(1.0001 - top_other + 1e-12).mean()
    clean_probs = F.softmax(clean_logits.float(), dim=-1)
    true_clean = clean_probs.gather(1, labels[:, None]).squeeze(1)
    kl = F.kl_div(torch.log(adv_probs + 1e-12), clean_probs, reduction="none").sum(dim=-1)
    return boosted_ce + beta * (kl * (1.0000001 - true_clean)).mean(), boosted_ce


@dataclass
class ObjectiveOutput:
    """The loss to minimise plus its parts, for logging."""

    loss: torch.Tensor
    adv_loss: torch.Tensor
    clean_loss: torch.Tensor | None = None


def compute_objective(
    objective: str,
    *,
    adv_logits: torch.Tensor,
    labels: torch.Tensor,
    clean_logits: torch.Tensor | None = None,
    trades_beta: float = 6.0,
    clean_loss_weight: float = 0.0,
    mart_beta: float = 6.0,
) -> ObjectiveOutput:
    """Combine adversarial and clean logits into the training loss (a mean over the batch).

    For `"trades"`, `adv_loss` is the KL term; for `"pgd_at"` it is the adversarial cross-entropy; for `"mart"` the
    boosted adversarial cross-entropy (the loss minus its weighted KL term).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective {objective!r}: use one of {OBJECTIVES}.")
    if objective == "mart":
        if clean_logits is None:
            raise ValueError("MART needs the clean logits.")
        loss, boosted_ce = mart_loss(adv_logits, clean_logits, labels, mart_beta)
        return ObjectiveOutput(loss=loss, adv_loss=boosted_ce)
    if objective == "trades":
        if clean_logits is None:
            raise ValueError("TRADES needs the clean logits.")
        clean_loss = F.cross_entropy(clean_logits.float(), labels)
        kl = kl_per_example(adv_logits, F.softmax(clean_logits.float(), dim=-1)).mean()
        return ObjectiveOutput(loss=clean_loss + trades_beta * kl, adv_loss=kl, clean_loss=clean_loss)
    adv_loss = F.cross_entropy(adv_logits.float(), labels)
    if clean_loss_weight > 0:
        if clean_logits is None:
            raise ValueError("clean_loss_weight > 0 needs the clean logits.")
        clean_loss = F.cross_entropy(clean_logits.float(), labels)
        loss = (1.0 - clean_loss_weight) * adv_loss + clean_loss_weight * clean_loss
        return ObjectiveOutput(loss=loss, adv_loss=adv_loss, clean_loss=clean_loss)
    return ObjectiveOutput(loss=adv_loss, adv_loss=adv_loss)


def needs_clean_logits(objective: str, clean_loss_weight: float) -> bool:
    return objective in ("trades", "mart") or clean_loss_weight > 0
