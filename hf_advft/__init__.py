"""hf-advft: adversarial fine-tuning of pre-trained image classifiers inside the Hugging Face stack."""

__version__ = "0.1.0.dev0"

from .attacks import fgsm, pgd
from .objectives import compute_objective
from .pixel_space import PixelSpace, resolve_pixel_space
from .schedules import get_slow_start_fast_decay_schedule
from .trainer import AdvTrainer
from .training_args import AdvTrainingArguments


__all__ = [
    "AdvTrainer",
    "AdvTrainingArguments",
    "PixelSpace",
    "__version__",
    "compute_objective",
    "fgsm",
    "get_slow_start_fast_decay_schedule",
    "pgd",
    "resolve_pixel_space",
]
