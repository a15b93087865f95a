"""Occam: a TensorFlow 2 training framework for regularization and generalization research."""

from setuptools import setup

setup(
    name="occam",
    version="0.1.0",
    description="Explicit GradientTape training with gin-configurable regularization and generalization metrics.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["trainer", "trainer.data", "models", "gin_configs"],
    package_data={"trainer.data": ["*.npz", "*.txt"], "gin_configs": ["*.gin", "*/*.gin"]},
    install_requires=[
        "tensorflow>=2.15",
        "absl-py",
        "gin-config>=0.5",
        "tensorboard",  # TF >= 2.21 no longer installs it.
        "numpy",
    ],
    extras_require={
        "test": ["pytest", "scikit-learn", "tensorflow-datasets>=4.9"],
        "tfa": ["tensorflow==2.15.1", "tensorflow-addons==0.23.0", "numpy<2"],
    },
    entry_points={"console_scripts": ["occam-train=trainer.main:main"]},
    license="Apache-2.0",
)
