"""Carlini et al. (2019)'s cheap checks for gradient masking, run by `hf_advft.evaluation.evaluate_robustness`.

Each check compares attacks that should agree or order themselves in a known way (accuracy falls with epsilon, is
near zero at a very large epsilon, does not improve with more PGD steps, AutoAttack is no weaker than PGD, a black-box
attack is no stronger than the white-box ones); a failure is a warning that the white-box number is over-estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .evaluation_utils import fraction


WHITE_BOX_COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t")
# A masking check tolerates this much accuracy (and at least one example) of sampling noise before it fires.
CHECK_SLACK = 0.01
# "Near zero" for the large-epsilon check: at most this accuracy (plus the slack) must survive.
LARGE_EPSILON_MAX_ACCURACY = 0.05


class GradientMaskingWarning(UserWarning):
    """A gradient-masking sanity check failed: the white-box robust accuracy is probably an over-estimate."""


@dataclass
class MaskingCheck:
    """One gradient-masking sanity check: `passed` is `None` when it did not apply (an attack was not run)."""

    name: str
    passed: bool | None
    detail: str


def _masking_checks(slack, curve, large, more_steps, pgd_acc, aa_acc, square_gain) -> list[MaskingCheck]:
    checks = []
    if len(curve) >= 2:
        rises = [(e0, a0, e1, a1) for (e0, a0), (e1, a1) in zip(curve, curve[1:]) if a1 > a0 + slack]
        detail = "; ".join(f"accuracy rises from {a0:.4f} at eps={e0:.4g} to {a1:.4f} at eps={e1:.4g}"
                           for e0, a0, e1, a1 in rises) or "accuracy never rises with epsilon"
        checks.append(MaskingCheck("accuracy_falls_with_epsilon", not rises, detail))
    if large is not None:
        eps, acc = large
        ok = acc <= LARGE_EPSILON_MAX_ACCURACY + slack
        checks.append(MaskingCheck("near_zero_at_large_epsilon", ok,
                                   f"PGD accuracy {acc:.4f} at eps={eps:.4g} (should be <= "
                                   f"{LARGE_EPSILON_MAX_ACCURACY + slack:.4f}: the ball holds a mid-grey image)"))
    if more_steps is not None:
        (k, acc_k), (k_more, acc_more) = more_steps
        checks.append(MaskingCheck("more_steps_do_not_help_the_model", acc_more <= acc_k + slack,
                                   f"PGD-{k} accuracy {acc_k:.4f}, PGD-{k_more} accuracy {acc_more:.4f}"))
    if aa_acc is not None and pgd_acc is not None:
        checks.append(MaskingCheck("autoattack_not_weaker_than_pgd", aa_acc <= pgd_acc + slack,
                                   f"AutoAttack accuracy {aa_acc:.4f}, PGD accuracy {pgd_acc:.4f}"))
    if square_gain is not None:
        checks.append(MaskingCheck("black_box_not_stronger_than_white_box", square_gain <= slack,
                                   f"Square broke {square_gain:.4f} of the examples that every white-box attack "
                                   f"missed"))
    return checks


def run_masking_checks(cfg, pgd_at, pgd_flags, curve, flags, broke, slack, dims) -> list[MaskingCheck]:
    """The extra attacks the checks need (large epsilon, more steps), then the checks themselves."""
    large_eps = cfg.large_epsilon
    if large_eps is None:
        large_eps = 0.5 if cfg.norm == "linf" else 0.5 * math.sqrt(dims)
    large = (large_eps, fraction(pgd_at(large_eps)))
    # The longer run follows the same step rule (2.5 * eps / steps, or an explicit step scaled alike): with the same
    # step and seed its first pgd_steps iterates would repeat the short run's, and early stopping would make the
    # check unable to fail.
    k_more = cfg.pgd_steps * cfg.check_steps_factor
    more = pgd_at(cfg.epsilon, steps=k_more, step_size=cfg.resolved_step_size() / cfg.check_steps_factor)
    pgd_acc = fraction(pgd_flags)
    more_steps = ((cfg.pgd_steps, pgd_acc), (k_more, fraction(more)))
    white_box = pgd_flags.clone()  # robust under every white-box attack that ran
    for name, hit in broke.items():
        if name in WHITE_BOX_COMPONENTS:
            white_box &= ~hit
    square_gain = None
    if "square" in broke:  # AutoAttack's Square ran on the points its white-box components missed
        square_gain = fraction(broke["square"] & white_box)
    if "square" in flags:
        square_gain = max(square_gain or 0.0, fraction(white_box & ~flags["square"]))
    aa_acc = fraction(flags["autoattack"]) if "autoattack" in flags else None
    return _masking_checks(slack, curve, large, more_steps, pgd_acc, aa_acc, square_gain)
