"""Occam: a TensorFlow 2 training framework for regularization and generalization research."""

from setuptools import find_packages, setup

setup(
    name="occam",
    version="0.1.0",
    description="Explicit GradientTape training with gin-configurable regularization and generalization metrics.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["trainer", "trainer.*", "models", "gin_configs", "gin_configs.*"]),
    package_data={"trainer.data": ["*.npz", "*.txt"], "gin_configs": ["*.gin"],
                  "gin_configs.regularization": ["*.gin"], "gin_configs.experiments": ["*.gin"]},
    install_requires=[
        "tensorflow>=2.15",
        "absl-py",
        "gin-config>=0.5",
        "tensorboard",  # TF >= 2.21 no longer installs it.
        "numpy",
    ],
    extras_require={
        "test": ["pytest", "scikit-learn", "matplotlib"],
        # The `tfds` loader and its tests; main lane only: the tensorflow-metadata it pulls in needs
        # protobuf >= 5, TensorFlow 2.15 needs < 5 (`import tensorflow_datasets` fails there).
        "tfds": ["tensorflow-datasets>=4.9"],
        "experiments": ["matplotlib"],
        # The tfa lane (Python 3.10/3.11): tensorflow-addons' last release and the last TensorFlow it
        # imports with (Keras 2). See README, "Tests and CI".
        "tfa": ["tensorflow==2.15.1", "tensorflow-addons==0.23.0", "numpy<2"],
    },
    entry_points={"console_scripts": ["occam-train=trainer.main:main"]},
    license="Apache-2.0",
)
