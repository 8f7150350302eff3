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
        "transformers>=4.57",
        "accelerate>=1.0",
        "datasets>=3.0",
        "timm>=1.0",
        "evaluate>=0.4",
        "huggingface-hub>=0.34",
        "safetensors>=0.4",
        "numpy>=1.24",
        "pyyaml>=6.0",
    ],
    extras_require={
        "test": ["pytest>=8", "scikit-learn>=1.3", "pillow>=10"],
        "plot": ["matplotlib>=3.7"],
        "dev": ["ruff>=0.6"],
    },
    entry_points={"console_scripts": ["hf-advft=hf_advft.cli:main"]},
)
