"""Datasets as in-memory train / validation / test splits (`Splits` of `ArrayData`).

Built in: `digits` (UCI 8x8 handwritten digits, shipped with the package) and `teacher_student`
(synthetic). From disk: `tfrecord` (tf.train.Example files) and `tfds` (a prepared TFDS dataset).
Every loader is gin-configurable and returns the same `Splits`.
"""

from trainer.data.arrays import ArrayData, Splits, corrupt_labels
from trainer.data.digits import digits
from trainer.data.mnist1d import mnist1d
from trainer.data.records import tfds, tfrecord, write_tfrecord
from trainer.data.synthetic import teacher_network, teacher_student

__all__ = [
    "ArrayData",
    "Splits",
    "corrupt_labels",
    "digits",
    "mnist1d",
    "teacher_network",
    "teacher_student",
    "tfds",
    "tfrecord",
    "write_tfrecord",
]
