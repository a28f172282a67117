"""Image-classification data sets as in-memory numpy arrays.

``load(name)`` returns a ``Dataset`` with train / validation / test splits.
The validation split is carved out of the original training split with a
seeded permutation, as NAS papers do (the controller's reward is validation
accuracy; the test split is only used to report the final architecture).

Sources:

* ``"digits"``: scikit-learn's 8x8 handwritten digits (1,797 images, shipped
  inside scikit-learn, so it works on any machine with no data at all). It has
  no test split of its own: a stratified 20% is held out as test with a fixed
  seed (the same test set for every ``seed``), and validation is carved from
  the remaining 80%. Pixel values 0..16 are stored as uint8 0..255
  (``round(v * 255 / 16)``) so that every data set shares one ``normalize``.
* ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``: tensorflow-datasets copies
  prepared in ``array_record`` format, read with ``tfds`` without TensorFlow.
  They are looked for in ``<data_dir>/tfds/<name>/<version>/`` and then in
  ``<data_dir>/<name>/<version>/``, where ``data_dir`` is resolved by
  ``nas_jax.data.paths.data_dir`` (argument, ``$NAS_JAX_DATA_DIR``, then
  ``../shared/data``). Where no prepared copy exists, one is built into
  ``<data_dir>/tfds`` from the original archives (``manual_dir``, or
  ``<data_dir>/<name>/`` when it holds them) or from the internet
  (``download=True``); building needs TensorFlow
  (``pip install 'nas_jax[tfds-build]'``).

Only the examples a call needs are decoded (decoding is ~0.1 ms an image), and
decoded examples are cached in-process per (name, prepared directory), so
repeated loads in one process, with other seeds or sizes, are cheap.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import threading
from typing import Any, NamedTuple, Sequence

import numpy as np

from nas_jax.data import paths

DIGITS_TEST_FRACTION = 0.2
# Fixed so that the digits test set never depends on the split seed: test
# accuracies of runs with different seeds stay comparable.
_DIGITS_TEST_SEED = 0
# Records decoded per tfds read: large enough for array_record's parallel
# reads, small enough to keep the decoded Python objects' memory modest.
_READ_CHUNK = 2048
# Floor on the per-channel std, one grey level, so that a constant channel
# (e.g. a tiny max_train) normalizes to 0 rather than dividing by zero.
_MIN_STD = 1.0 / 255.0


class CorruptDataError(RuntimeError):
  """A prepared data file exists but cannot be read (truncated or corrupt)."""


class _TfdsSpec(NamedTuple):
  version: str             # tfds version that tensorflow-datasets 4.9 builds
  manual_files: tuple[str, ...]  # original archives tfds accepts in manual_dir
  origin: str


_TFDS = {
    "mnist": _TfdsSpec(
        "3.0.1",
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    "fashion_mnist": _TfdsSpec(
        "3.0.1",
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    "cifar10": _TfdsSpec(
        "3.0.2", ("cifar-10-binary.tar.gz",),
        "https://www.cs.toronto.edu/~kriz/"),
}
NAMES = ("digits",) + tuple(_TFDS)
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


class Dataset(NamedTuple):
  """Three splits of one data set, images as uint8 NHWC.

  ``*_index`` give, for every example, its position in the source split it
  was taken from: the original train split for train and validation (for
  digits, the 1,797-image array for all three splits), the original test split
  for test. ``pool_size`` is the size of the pool that train and validation
  were carved from, so without ``max_train``,
  ``len(train) + len(val) == pool_size``.
  """

  name: str
  train_images: np.ndarray   # uint8[N, H, W, C]
  train_labels: np.ndarray   # int32[N]
  val_images: np.ndarray
  val_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  mean: np.ndarray           # float32[C], of train pixels scaled to [0, 1]
  std: np.ndarray            # float32[C], likewise (floored at 1/255)
  train_index: np.ndarray    # int64[N], sorted
  val_index: np.ndarray
  test_index: np.ndarray
  pool_size: int

  @property
  def image_shape(self) -> tuple[int, ...]:
    """(H, W, C)."""
    return tuple(self.train_images.shape[1:])

  def normalize(self, images: Any) -> Any:
    """uint8 images -> float32 ``(images / 255 - mean) / std`` per channel.

    Works on numpy arrays (returns numpy) and on jax arrays, inside ``jit``
    too (returns jax); ``mean`` and ``std`` are train-split statistics.
    """
    return ((images.astype(np.float32) * np.float32(1.0 / 255.0) - self.mean)
            / self.std).astype(np.float32)


def load(name: str, *, data_dir: str | os.PathLike | None = None,
         manual_dir: str | os.PathLike | None = None,
         num_val: int | None = None, val_fraction: float = 0.1, seed: int = 0,
         max_train: int | None = None, download: bool = False) -> Dataset:
  """Loads a data set and carves a seeded validation split from its train.

  Args:
    name: one of ``NAMES``: "digits", "mnist", "fashion_mnist", "cifar10".
    data_dir: folder holding ``tfds/<name>/<version>/`` (or
      ``<name>/<version>/``); default ``$NAS_JAX_DATA_DIR``, then
      ``../shared/data``. Unused for "digits".
    manual_dir: folder holding the original archives (e.g. the four IDX
      ``.gz`` files of MNIST) to build a prepared copy from when none exists;
      needs TensorFlow.
    num_val: validation examples; overrides ``val_fraction``.
    val_fraction: fraction of the train pool held out for validation.
    seed: seeds the train / validation split (the same seed gives the same
      split). The test split does not depend on it.
    max_train: keep at most this many training examples (a seeded subset),
      for quick runs; validation and test are unaffected.
    download: let tensorflow-datasets download and prepare the data where no
      prepared copy is found (needs TensorFlow and internet).

  Returns:
    A ``Dataset``; mean / std are computed on its (possibly subsampled)
    train split.

  Raises:
    ValueError: unknown name or invalid split sizes.
    FileNotFoundError: no data found; the message says which files to put
      where.
    CorruptDataError: a prepared file exists but cannot be read.
    ImportError: a build is needed but TensorFlow is not installed.
  """
  if name not in NAMES:
    raise ValueError(f"Unknown data set {name!r}; expected one of "
                     f"{', '.join(NAMES)}")
  if name == "digits":
    images, labels, test_index, pool = _digits_arrays()
    test = (images[test_index], labels[test_index])
    pool_split = _ArraySplit(images, labels)
    num_classes = 10
  else:
    splits, num_classes = _open_tfds(
        name, str(_locate_tfds(name, paths.data_dir(data_dir), manual_dir,
                               download)))
    pool_split, test_split = splits["train"], splits["test"]
    pool = np.arange(len(pool_split))
    test_index = np.arange(len(test_split))
    test = test_split.take(test_index)

  val_index, train_index = _split_pool(pool, num_val=num_val,
                                       val_fraction=val_fraction, seed=seed,
                                       max_train=max_train, name=name)
  train_images, train_labels = pool_split.take(train_index)
  val_images, val_labels = pool_split.take(val_index)
  mean, std = _channel_stats(train_images)
  return Dataset(name=name, train_images=train_images,
                 train_labels=train_labels, val_images=val_images,
                 val_labels=val_labels, test_images=test[0],
                 test_labels=test[1], num_classes=int(num_classes), mean=mean,
                 std=std, train_index=train_index, val_index=val_index,
                 test_index=np.asarray(test_index, np.int64),
                 pool_size=len(pool))


def _split_pool(pool: np.ndarray, *, num_val: int | None, val_fraction: float,
                seed: int, max_train: int | None, name: str
                ) -> tuple[np.ndarray, np.ndarray]:
  """(val, train) indices, each sorted, from a seeded permutation of pool."""
  n = len(pool)
  if num_val is None:
    if not 0.0 <= val_fraction < 1.0:
      raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    num_val = int(round(val_fraction * n))
  if not 0 <= num_val < n:
    raise ValueError(f"num_val must be in [0, {n}) for {name} (its train pool "
                     f"holds {n} examples), got {num_val}")
  if max_train is not None and max_train < 1:
    raise ValueError(f"max_train must be >= 1 or None, got {max_train}")
  perm = pool[np.random.default_rng(seed).permutation(n)]
  val, train = perm[:num_val], perm[num_val:]
  if max_train is not None:
    train = train[:max_train]
  # Sorted indices give sequential reads and a source-order data set; the
  # input pipeline shuffles per epoch anyway.
  return np.sort(val).astype(np.int64), np.sort(train).astype(np.int64)


def _channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of uint8 images scaled to [0, 1]."""
  c = images.shape[-1]
  total = np.zeros(c, np.float64)
  total_sq = np.zeros(c, np.float64)
  # Chunked so that CIFAR-10 does not need a 1.2 GB float64 copy.
  for s in range(0, len(images), 4096):
    x = images[s:s + 4096].reshape(-1, c).astype(np.float64)
    total += x.sum(0)
    total_sq += np.square(x).sum(0)
  count = max(images.size // c, 1)
  mean = total / count
  var = np.maximum(total_sq / count - np.square(mean), 0.0)
  std = np.maximum(np.sqrt(var) / 255.0, _MIN_STD)
  return (mean / 255.0).astype(np.float32), std.astype(np.float32)


class _ArraySplit:
  """A source split already in memory."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self._images, self._labels = images, labels

  def __len__(self) -> int:
    return len(self._labels)

  def take(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self._images[index], self._labels[index]


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(images uint8[1797, 8, 8, 1], labels, test index, pool index)."""
  # Imported here: scikit-learn takes ~1 s to import, and only digits uses it.
  from sklearn import datasets as sk_datasets
  digits = sk_datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).clip(0, 255)
  images = images.astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  rng = np.random.default_rng(_DIGITS_TEST_SEED)
  # Stratified, so every class keeps its share in the small test set.
  test = []
  for c in range(10):
    members = np.flatnonzero(labels == c)
    test.append(rng.permutation(members)[:int(round(
        DIGITS_TEST_FRACTION * len(members)))])
  test_index = np.sort(np.concatenate(test)).astype(np.int64)
  pool = np.setdiff1d(np.arange(len(labels)), test_index).astype(np.int64)
  for a in (images, labels, test_index, pool):
    a.setflags(write=False)  # Cached: guard against callers' in-place edits.
  return images, labels, test_index, pool


# ----------------------------------------------------------------------------
# tensorflow-datasets sources.


def _version_key(v: str) -> tuple[int, ...]:
  return tuple(int(p) for p in v.split("."))


def _prepared_dir(dataset_dir: pathlib.Path, spec: _TfdsSpec
                  ) -> pathlib.Path | None:
  """The prepared version folder under dataset_dir, or None.

  Prefers the version this tfds release builds, else the newest present.
  Folders without dataset_info.json (e.g. tfds' ``*.incomplete*`` leftovers
  from an interrupted build) are ignored.
  """
  if not dataset_dir.is_dir():
    return None
  versions = [p.name for p in dataset_dir.iterdir()
              if _VERSION_RE.match(p.name)
              and (p / "dataset_info.json").is_file()]
  if not versions:
    return None
  best = spec.version if spec.version in versions else max(
      versions, key=_version_key)
  return dataset_dir / best


def _locate_tfds(name: str, root: pathlib.Path,
                 manual_dir: str | os.PathLike | None, download: bool
                 ) -> pathlib.Path:
  """Finds (or builds) the prepared version folder of a tfds data set."""
  spec = _TFDS[name]
  for base in (root / "tfds", root):
    found = _prepared_dir(base / name, spec)
    if found is not None:
      return found
  if manual_dir is not None:
    manual = pathlib.Path(manual_dir).expanduser()
    missing = [f for f in spec.manual_files if not (manual / f).is_file()]
    if missing:
      raise FileNotFoundError(
          f"manual_dir {manual} lacks {', '.join(missing)}; "
          f"tensorflow-datasets needs {', '.join(spec.manual_files)} there "
          f"to build {name} (from {spec.origin}).")
  elif all((root / name / f).is_file() for f in spec.manual_files):
    manual = root / name
  elif download:
    manual = None
  else:
    raise FileNotFoundError(_not_found_message(name, root, spec))
  _build_tfds(name, root / "tfds", manual)
  found = _prepared_dir(root / "tfds" / name, spec)
  if found is None:
    raise FileNotFoundError(
        f"tensorflow-datasets reported building {name} but no prepared copy "
        f"is in {root / 'tfds' / name}; check that folder.")
  return found


def _not_found_message(name: str, root: pathlib.Path, spec: _TfdsSpec) -> str:
  vdir = root / "tfds" / name / spec.version
  files = ", ".join(
      ["dataset_info.json", "features.json"]
      + [f"{name}-{s}.array_record-00000-of-NNNNN" for s in ("train", "test")])
  return (
      f"No {name} data under {root}. nas_jax reads, without TensorFlow, a copy "
      "prepared by tensorflow-datasets in array_record format: put it in "
      f"{vdir}/ ({files}; the folder tfds writes for "
      f"{name}:{spec.version}, e.g. with `tfds build {name} "
      "--file_format=array_record`). Or put the original files "
      f"{', '.join(spec.manual_files)} (from {spec.origin}) in "
      f"{root / name}/ or pass manual_dir=..., and nas_jax builds that copy "
      "(needs TensorFlow: pip install 'nas_jax[tfds-build]'); or pass "
      "download=True. To read another folder, pass data_dir=... or set "
      f"${paths.ENV_VAR} to the folder that holds tfds/{name}/.")


def _build_tfds(name: str, tfds_dir: pathlib.Path,
                manual: pathlib.Path | None) -> None:
  """Prepares an array_record copy with tensorflow-datasets (needs TF)."""
  # tfds writes examples through TensorFlow, and tfds 4.9.10's builder path
  # imports importlib_resources, which nothing else installs on Python >= 3.9.
  for module in ("tensorflow", "importlib_resources"):
    try:
      __import__(module)
    except ImportError as e:
      source = f"the files in {manual}" if manual else "a download"
      raise ImportError(
          f"Building {name} from {source} with tensorflow-datasets needs "
          f"{module}, which is not installed: pip install "
          "'nas_jax[tfds-build]'. Alternatively, put a copy prepared in "
          f"array_record format in {tfds_dir / name}/<version>/.") from e
  import tensorflow_datasets as tfds
  config = (tfds.download.DownloadConfig(manual_dir=str(manual)) if manual
            else tfds.download.DownloadConfig())
  # array_record, not tfds' default TFRecord: only array_record is readable
  # by random access without TensorFlow.
  builder = tfds.builder(name, data_dir=str(tfds_dir),
                         file_format="array_record")
  builder.download_and_prepare(download_config=config)


# (name, prepared folder) -> ({split: reader}, num_classes). A dict rather
# than functools.lru_cache so that one unreadable folder can be evicted alone.
_TFDS_CACHE: dict[tuple[str, str], tuple[dict[str, _TfdsSplit], int]] = {}
_TFDS_CACHE_LOCK = threading.Lock()


def _open_tfds(name: str, version_dir: str
               ) -> tuple[dict[str, _TfdsSplit], int]:
  """({split: reader}, num_classes) for a prepared folder; cached."""
  with _TFDS_CACHE_LOCK:
    key = (name, version_dir)
    if key not in _TFDS_CACHE:
      _TFDS_CACHE[key] = _open_tfds_uncached(name, version_dir)
    return _TFDS_CACHE[key]


def _open_tfds_uncached(name: str, version_dir: str
                        ) -> tuple[dict[str, _TfdsSplit], int]:
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder_from_directory(version_dir)
    info = builder.info
  except Exception as e:  # pylint: disable=broad-except
    raise CorruptDataError(
        f"Cannot read the {name} metadata in {version_dir} (dataset_info.json "
        f"or features.json): {e}. Replace the folder with a fresh copy.") from e
  fmt = str(getattr(info.file_format, "value", info.file_format))
  if fmt != "array_record":
    raise ValueError(
        f"{version_dir} holds {name} in {fmt} format, which needs TensorFlow "
        "to read. Rebuild it in array_record format (`tfds build "
        f"{name} --file_format=array_record`) or delete it so nas_jax can "
        "build one.")
  sources = builder.as_data_source()
  missing = {"train", "test"} - set(sources)
  if missing:
    raise CorruptDataError(f"{version_dir} lacks the {sorted(missing)} "
                           f"split(s) of {name}; replace it with a fresh copy.")
  splits = {s: _TfdsSplit(name, version_dir, s, sources[s], info)
            for s in ("train", "test")}
  return splits, int(info.features["label"].num_classes)


class _TfdsSplit:
  """Decodes and caches the examples of one tfds split on demand."""

  def __init__(self, name: str, version_dir: str, split: str, source: Any,
               info: Any):
    self._name, self._split, self._source = name, split, source
    self._version_dir = version_dir
    split_info = info.splits[split]
    self._files = [str(p) for p in split_info.filepaths]
    self._shard_lengths = [int(n) for n in split_info.shard_lengths]
    n = len(source)
    shape = tuple(int(d) for d in info.features["image"].shape)
    # np.empty does not touch memory; pages fill as examples are decoded.
    self._images = np.empty((n, *shape), np.uint8)
    self._labels = np.empty(n, np.int32)
    self._decoded = np.zeros(n, bool)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._labels)

  def take(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = np.asarray(index, np.int64)
    with self._lock:
      todo = np.unique(index[~self._decoded[index]])
      for s in range(0, len(todo), _READ_CHUNK):
        chunk = todo[s:s + _READ_CHUNK]
        items = self._read(chunk)
        self._images[chunk] = np.stack([it["image"] for it in items])
        self._labels[chunk] = [it["label"] for it in items]
        self._decoded[chunk] = True
      return self._images[index], self._labels[index]

  def _read(self, keys: np.ndarray) -> Sequence[dict[str, Any]]:
    try:
      return self._source.__getitems__(keys.tolist())
    except ImportError as e:
      # A missing image decoder is an install problem, not a bad file.
      raise ImportError(
          f"Cannot decode the {self._name} images: {e} (nas_jax installs "
          "pillow; reinstall with `pip install -e .` or "
          "`pip install pillow`).") from e
    except Exception as e:  # pylint: disable=broad-except
      # array_record's errors name neither the file nor the data set.
      with _TFDS_CACHE_LOCK:  # So that a replaced file is re-opened.
        _TFDS_CACHE.pop((self._name, self._version_dir), None)
      bad = self._bad_files() or self._files
      raise CorruptDataError(
          f"Cannot read the {self._name} {self._split} split from "
          f"{', '.join(bad)}: {type(e).__name__}: {e}. The file is truncated "
          "or corrupt; replace it with a fresh copy (or delete its folder and "
          "load again to rebuild it).") from e

  def _bad_files(self) -> list[str]:
    """The shard files that fail to open or to yield their first and last
    record; empty if each reads on its own."""
    from array_record.python import array_record_module as arm
    bad = []
    for path, length in zip(self._files, self._shard_lengths):
      try:
        reader = arm.ArrayRecordReader(path)
        try:
          if reader.num_records() != length:
            raise ValueError("wrong record count")
          reader.read([0, length - 1])
        finally:
          reader.close()
      except Exception:  # pylint: disable=broad-except
        bad.append(path)
    return bad
