"""Models for Occam: plain `tf.keras` models, gin-configurable.

Any callable that returns a `tf.keras.Model` mapping a batch of features to logits (or regression
outputs) can be a model: register it with `@gin.configurable` and bind `Trainer.model = @YourModel`
(a factory: no parentheses). Every model here takes the keyword arguments `input_shape` (the shape of
one example) and `num_outputs` (the number of classes), so that both can come from the data.
"""

from models.cifar_resnet import CifarResNet
from models.imagenet_resnet import ImageNetResNet
from models.mlp import MLP
from models.mnist1d import MNIST1DCNN, MNIST1DGRU, MNIST1DMLP, MNIST1DLogistic
from models.preact_resnet import PreActResNet
from models.resnet import ResNet
from models.vit import ViT
from models.wide_resnet import WideResNet

__all__ = ["MLP", "MNIST1DCNN", "MNIST1DGRU", "MNIST1DLogistic", "MNIST1DMLP", "CifarResNet",
           "ImageNetResNet", "PreActResNet", "ResNet", "ViT", "WideResNet"]
