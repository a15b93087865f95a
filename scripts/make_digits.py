"""Writes `trainer/data/digits.npz` from scikit-learn's bundled copy of the UCI 8x8 digits.

The framework ships the 1,797 images itself (about 45 KB) so that its examples and tests run offline
and do not depend on scikit-learn at run time. The archive is written byte for byte
deterministically (fixed zip timestamps, fixed member order), so rerunning this script leaves git
with nothing to commit. Attribution: see `trainer/data/DIGITS_LICENSE.txt`.

Usage: python scripts/make_digits.py [OUTPUT_PATH]
"""

from __future__ import annotations

import hashlib
import io
import pathlib
import sys
import zipfile

import numpy as np
from sklearn.datasets import load_digits

DEFAULT_OUTPUT = pathlib.Path(__file__).resolve().parents[1] / "trainer" / "data" / "digits.npz"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # Earliest zip timestamp; replaces "now" so bytes are stable.


def digits_arrays() -> dict[str, np.ndarray]:
  """The images as uint8 (1797, 8, 8) in 0..16 and the labels as uint8 (1797,), checked exact."""
  bunch = load_digits()
  images = bunch.images.astype(np.uint8)
  labels = bunch.target.astype(np.uint8)
  if not (np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)):
    raise ValueError("scikit-learn's digits are not small integers; refusing to round them")
  if images.shape != (1797, 8, 8) or images.max() > 16:
    raise ValueError(f"unexpected digits data: shape {images.shape}, max {images.max()}")
  return {"images": images, "labels": labels}


def write_npz(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> bytes:
  """Writes a compressed .npz that `np.load` reads, with no timestamps; returns its bytes.

  `np.savez_compressed` stamps each member with the current time, so its output changes on every
  run; this writes the same zip-of-.npy layout with a fixed timestamp instead.
  """
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as archive:
    for name, array in arrays.items():
      member = io.BytesIO()
      np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
      info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
      info.compress_type = zipfile.ZIP_DEFLATED
      info.external_attr = 0o644 << 16
      archive.writestr(info, member.getvalue(), compresslevel=9)
  data = buffer.getvalue()
  path.write_bytes(data)
  return data


def main(argv: list[str]) -> None:
  output = pathlib.Path(argv[1]) if len(argv) > 1 else DEFAULT_OUTPUT
  arrays = digits_arrays()
  data = write_npz(output, arrays)
  with np.load(output) as reloaded:
    if not all(np.array_equal(reloaded[key], value) for key, value in arrays.items()):
      raise RuntimeError(f"{output} does not read back equal to what was written")
  for key, value in arrays.items():
    print(f"{key}: shape {value.shape}, dtype {value.dtype}, range {value.min()}..{value.max()}")
  print(f"wrote {output}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
  main(sys.argv)
