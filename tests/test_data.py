"""Tests of the image data sets, augmentations and input pipeline
(nas_jax/data/{datasets,augment,pipeline}.py)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.data import augment, datasets, paths, pipeline

FASHION_DIR = paths.data_dir() / "tfds" / "fashion_mnist" / "3.0.1"
needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "dataset_info.json").is_file(),
    reason=f"no prepared fashion_mnist in {FASHION_DIR} (set "
    f"${paths.ENV_VAR} to the folder holding tfds/fashion_mnist/3.0.1/)")


def _all_index(ds: datasets.Dataset) -> np.ndarray:
  return np.concatenate([ds.train_index, ds.val_index, ds.test_index])


# ---------------------------------------------------------------- datasets


def test_digits_loads_offline_and_splits_partition_the_data():
  ds = datasets.load("digits", data_dir="/nonexistent")  # Needs no data dir.
  assert ds.num_classes == 10 and ds.image_shape == (8, 8, 1)
  for images, labels in [(ds.train_images, ds.train_labels),
                         (ds.val_images, ds.val_labels),
                         (ds.test_images, ds.test_labels)]:
    assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1)
    assert labels.dtype == np.int32 and labels.shape == (len(images),)
    assert set(np.unique(labels)) == set(range(10))
  index = _all_index(ds)
  assert len(index) == 1797 and len(np.unique(index)) == 1797
  assert ds.pool_size == len(ds.train_labels) + len(ds.val_labels)
  assert len(ds.test_labels) == pytest.approx(0.2 * 1797, abs=5)
  assert len(ds.val_labels) == round(0.1 * ds.pool_size)
  # Indices point at the right images: 0..16 scaled by 255/16.
  from sklearn.datasets import load_digits
  raw = load_digits()
  np.testing.assert_array_equal(
      ds.val_images[..., 0], np.round(raw.images[ds.val_index] * 255 / 16))
  np.testing.assert_array_equal(ds.test_labels, raw.target[ds.test_index])
  assert ds.train_images.max() == 255
  x = ds.normalize(ds.train_images)
  assert x.dtype == np.float32 and ds.mean.shape == ds.std.shape == (1,)
  np.testing.assert_allclose([x.mean(), x.std()], [0.0, 1.0], atol=1e-4)


def test_digits_split_is_seeded_and_test_is_fixed():
  a = datasets.load("digits", seed=1)
  b = datasets.load("digits", seed=1)
  c = datasets.load("digits", seed=2)
  np.testing.assert_array_equal(a.val_index, b.val_index)
  np.testing.assert_array_equal(a.train_images, b.train_images)
  assert not np.array_equal(a.val_index, c.val_index)
  np.testing.assert_array_equal(a.test_index, c.test_index)
  small = datasets.load("digits", seed=1, num_val=50, max_train=100)
  assert len(small.val_labels) == 50 and len(small.train_labels) == 100
  assert not set(small.train_index) & set(small.val_index)


def test_load_rejects_bad_arguments():
  with pytest.raises(ValueError, match="digits, mnist, fashion_mnist, cifar10"):
    datasets.load("imagenet")
  with pytest.raises(ValueError, match="num_val"):
    datasets.load("digits", num_val=10_000)
  with pytest.raises(ValueError, match="max_train"):
    datasets.load("digits", max_train=0)


@needs_fashion
def test_fashion_mnist_loads_from_shared_tfds_dir():
  ds = datasets.load("fashion_mnist", max_train=500, seed=3)
  assert ds.image_shape == (28, 28, 1) and ds.num_classes == 10
  assert ds.pool_size == 60_000 and len(ds.val_labels) == 6_000
  assert len(ds.train_labels) == 500 and len(ds.test_labels) == 10_000
  # Train and val are disjoint parts of the 60,000-image train split.
  both = np.concatenate([ds.train_index, ds.val_index])
  assert len(np.unique(both)) == len(both) and both.max() < 60_000
  np.testing.assert_array_equal(ds.test_index, np.arange(10_000))
  for images, labels in [(ds.train_images, ds.train_labels),
                         (ds.val_images, ds.val_labels),
                         (ds.test_images, ds.test_labels)]:
    assert images.dtype == np.uint8 and labels.dtype == np.int32
    assert labels.min() == 0 and labels.max() == 9
  assert np.bincount(ds.test_labels).tolist() == [1000] * 10  # Balanced.
  assert 0.2 < float(ds.mean[0]) < 0.4 and ds.test_images.max() == 255
  # A second load in the process reuses the decoded examples.
  again = datasets.load("fashion_mnist", max_train=500, seed=3)
  np.testing.assert_array_equal(again.train_images, ds.train_images)


def test_missing_data_names_expected_files(tmp_path):
  with pytest.raises(FileNotFoundError) as err:
    datasets.load("fashion_mnist", data_dir=tmp_path / "nowhere")
  msg = str(err.value)
  for part in [str(tmp_path / "nowhere" / "tfds" / "fashion_mnist" / "3.0.1"),
               "fashion_mnist-train.array_record", "dataset_info.json",
               "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
               "download=True", paths.ENV_VAR]:
    assert part in msg, part
  with pytest.raises(FileNotFoundError, match="cifar-10-binary.tar.gz"):
    datasets.load("cifar10", data_dir=tmp_path)


def test_manual_dir_missing_files_are_named(tmp_path):
  (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
    datasets.load("mnist", data_dir=tmp_path, manual_dir=tmp_path)


@needs_fashion
def test_truncated_array_record_names_the_file(tmp_path):
  dst = tmp_path / "tfds" / "fashion_mnist" / FASHION_DIR.name
  # copyfile, not copy2: the shared files are read-only.
  shutil.copytree(FASHION_DIR, dst, copy_function=shutil.copyfile)
  bad = dst / "fashion_mnist-train.array_record-00000-of-00001"
  with open(bad, "r+b") as f:
    f.truncate(bad.stat().st_size // 2)
  with pytest.raises(datasets.CorruptDataError) as err:
    datasets.load("fashion_mnist", data_dir=tmp_path, max_train=10)
  assert str(bad) in str(err.value) and "corrupt" in str(err.value)
  assert "test.array_record" not in str(err.value)  # Only the bad file.


# ---------------------------------------------------------------- augment


def _images(n=4, h=8, w=6, c=3, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, h, w, c)) + 0.5


def test_crop_with_zero_padding_is_identity():
  x = _images()
  np.testing.assert_array_equal(augment.random_crop(jax.random.key(1), x, 0),
                                x)


def test_crop_shifts_within_padding():
  x = _images(n=16)
  y = augment.random_crop(jax.random.key(1), x, 2)
  assert y.shape == x.shape and y.dtype == x.dtype
  # Each output is the zero-padded input shifted by some (dy, dx) in [-2, 2].
  padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
  shifts = set()
  for i in range(16):
    hits = [(dy, dx) for dy in range(5) for dx in range(5)
            if np.array_equal(padded[i, dy:dy + 8, dx:dx + 6], y[i])]
    assert hits, i
    shifts.add(hits[0])
  assert len(shifts) > 1  # Per-image offsets.


def test_flip_twice_with_same_key_is_identity():
  x = _images(n=32)
  k = jax.random.key(2)
  once = augment.random_flip(k, x)
  np.testing.assert_array_equal(augment.random_flip(k, once), x)
  flipped = [not np.array_equal(once[i], x[i]) for i in range(32)]
  assert 0 < sum(flipped) < 32
  for i in range(32):
    expect = x[i, :, ::-1] if flipped[i] else x[i]
    np.testing.assert_array_equal(once[i], expect)


def test_cutout_zeros_a_square():
  x = jnp.ones((2, 32, 32, 3))
  y = augment.cutout_at(x, jnp.array([[16, 16], [0, 31]]), 8)
  # Rows 12..19 and columns 12..19; then rows -4..3 and columns 27..34.
  zeros = np.asarray(y[..., 0] == 0)
  assert zeros[0].sum() == 64                       # Fully inside.
  assert zeros[0, 12:20, 12:20].all()
  assert zeros[1].sum() == 4 * 5                    # Clipped at a corner.
  assert (np.asarray(y) == 0).sum(-1).max() in (0, 3)  # All channels.
  r = augment.cutout(jax.random.key(3), jnp.ones((64, 32, 32, 1)), 8)
  counts = np.asarray((r == 0).sum((1, 2, 3)))
  assert counts.max() == 64 and counts.min() >= 16 and counts.min() < 64


def test_augmentations_keep_shape_dtype_and_jit():
  x = _images(n=8, h=16, w=16)
  k = jax.random.key(4)
  y = jax.jit(lambda k, x: augment.standard_cifar(k, x, cutout_size=4))(k, x)
  # Same as the three steps applied one by one with the split keys.
  k_crop, k_flip, k_cut = jax.random.split(k, 3)
  expect = x
  for step in [lambda z: augment.random_crop(k_crop, z, 4),
               lambda z: augment.random_flip(k_flip, z),
               lambda z: augment.cutout(k_cut, z, 4)]:
    expect = step(expect)
    assert expect.shape == x.shape and expect.dtype == x.dtype
  np.testing.assert_array_equal(y, expect)
  assert not np.array_equal(y, x)
  # vmap over a leading device-like axis, one key per slice.
  keys = jax.random.split(k, 2)
  yy = jax.vmap(augment.standard_cifar)(keys, jnp.stack([x, x]))
  assert yy.shape == (2, *x.shape) and yy.dtype == x.dtype


# ---------------------------------------------------------------- pipeline


def test_batches_are_deterministic_per_seed_and_epoch():
  images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1)
  labels = np.arange(100) % 10

  def labels_of(**kw):
    return [y.tolist() for _, y in pipeline.batches(images, labels, 16, **kw)]

  assert labels_of(seed=0, epoch=0) == labels_of(seed=0, epoch=0)
  assert labels_of(seed=0, epoch=0) != labels_of(seed=0, epoch=1)
  assert labels_of(seed=0, epoch=0) != labels_of(seed=1, epoch=0)
  out = list(pipeline.batches(images, labels, 16, seed=0, epoch=0))
  assert len(out) == 6 == pipeline.num_batches(100, 16)
  x, y = out[0]
  assert x.dtype == np.uint8 and y.dtype == np.int32
  assert x.shape == (16, 1, 1, 1)
  np.testing.assert_array_equal(x[:, 0, 0, 0] % 10, y)  # Pairs kept together.


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_example_once(shuffle):
  images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1)
  out = list(pipeline.batches(images, np.zeros(100), 16, seed=5, epoch=2,
                              shuffle=shuffle, drop_remainder=False))
  assert len(out) == 7 == pipeline.num_batches(100, 16, drop_remainder=False)
  assert [len(y) for _, y in out] == [16] * 6 + [4]
  seen = np.concatenate([x[:, 0, 0, 0] for x, _ in out])
  assert sorted(seen.tolist()) == list(range(100))
  assert (seen.tolist() == list(range(100))) == (not shuffle)


def test_shard_batch_single_device_and_errors():
  x = np.arange(12, dtype=np.float32).reshape(4, 3)
  (sx,) = pipeline.shard_batch((x,))
  np.testing.assert_array_equal(sx, x)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("model",))
  with pytest.raises(ValueError, match="'data'"):
    pipeline.shard_batch(x, mesh)


_SHARD_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from nas_jax.data import pipeline
    assert jax.device_count() == 8, jax.devices()
    images = np.arange(16 * 4 * 4 * 1, dtype=np.uint8).reshape(16, 4, 4, 1)
    labels = np.arange(16, dtype=np.int32)
    x, y = pipeline.shard_batch((images, labels))
    for arr, ref in [(x, images), (y, labels)]:
      assert len(arr.sharding.device_set) == 8, arr.sharding
      assert arr.sharding.spec == jax.sharding.PartitionSpec("data")
      assert {s.data.shape[0] for s in arr.addressable_shards} == {2}
      np.testing.assert_array_equal(np.asarray(arr), ref)
    try:
      pipeline.shard_batch(images[:12])
    except ValueError as e:
      assert "divisible" in str(e) and "8 devices" in str(e), e
    else:
      raise AssertionError("no error for 12 examples on 8 devices")
    print("OK")
""")


def test_shard_batch_on_eight_cpu_devices():
  # XLA reads its flags once, when jax initialises: hence a fresh process.
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  root = pathlib.Path(__file__).resolve().parents[1]
  proc = subprocess.run([sys.executable, "-c", _SHARD_SCRIPT], env=env,
                        cwd=root, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
