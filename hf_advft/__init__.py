"""hf-advft: adversarial fine-tuning of pre-trained image classifiers inside the Hugging Face stack."""

__version__ = "0.1.0.dev0"

from .attacks import fgsm, n_fgsm, pgd
from .evaluation import RobustEvalConfig, RobustnessResult, evaluate_robustness, plot_robustness_curve
from .gallery import plot_adversarial_gallery
from .hub import RobustModel, load_robust_model, push_robust_model, save_robust_model
from .objectives import compute_objective
from .pixel_space import PixelSpace, resolve_pixel_space
from .schedules import get_slow_start_fast_decay_schedule
from .trainer import AdvTrainer
from .training_args import AdvTrainingArguments


__all__ = [
    "AdvTrainer",
    "AdvTrainingArguments",
    "PixelSpace",
    "RobustEvalConfig",
    "RobustModel",
    "RobustnessResult",
    "__version__",
    "compute_objective",
    "evaluate_robustness",
    "fgsm",
    "get_slow_start_fast_decay_schedule",
    "load_robust_model",
    "n_fgsm",
    "pgd",
    "plot_adversarial_gallery",
    "plot_robustness_curve",
    "push_robust_model",
    "resolve_pixel_space",
    "save_robust_model",
]
