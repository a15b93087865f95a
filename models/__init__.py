"""Models for Occam: plain `tf.keras` models, gin-configurable.

Any callable that returns a `tf.keras.Model` mapping a batch of features to logits (or regression
outputs) can be a model: register it with `@gin.configurable` and bind `Trainer.model = @YourModel`
(a factory: no parentheses).
"""

from models.mlp import MLP
from models.resnet import ResNet

__all__ = ["MLP", "ResNet"]
