"""Datasets as train / validation / test splits (`Splits`), and how images reach the model.

Built in: `digits` (UCI 8x8 handwritten digits, shipped with the package), `mnist1d` (generated
offline) and `teacher_student` (synthetic). From disk: `tfrecord` (streamed TFRecord shards),
`tfds` (a prepared TFDS dataset, read by index) and memory-mapped `.npy` arrays (`npy`). Every
loader is gin-configurable and returns the same `Splits`; `ImagePreprocessing` crops, flips,
resizes and normalizes images.
"""

from trainer.data.arrays import ArrayData, corrupt_labels
from trainer.data.digits import digits
from trainer.data.loaders import npy, tfds, tfrecord, write_tfrecord
from trainer.data.mnist1d import mnist1d
from trainer.data.preprocessing import ImagePreprocessing
from trainer.data.sources import IndexedData, RecordData
from trainer.data.splits import Splits
from trainer.data.synthetic import teacher_network, teacher_student

__all__ = [
    "ArrayData",
    "ImagePreprocessing",
    "IndexedData",
    "RecordData",
    "Splits",
    "corrupt_labels",
    "digits",
    "mnist1d",
    "npy",
    "teacher_network",
    "teacher_student",
    "tfds",
    "tfrecord",
    "write_tfrecord",
]
