"""Small data sets for the experiments: nothing is downloaded.

``digits`` is the 8x8 handwritten-digit set that ships with scikit-learn (``pip install
'momentum-ode[examples]'``); ``cifar10`` reads a local copy of the CIFAR-10 "python version" batches;
``python_source`` is text on every machine that runs the library: the source files of Python's
standard library.
"""

from __future__ import annotations

import hashlib
import pickle
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def _split(images: torch.Tensor, labels: np.ndarray, test_fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):  # stratified: each class split in the same proportion
        members = np.flatnonzero(labels == label)
        test[rng.choice(members, size=round(test_fraction * len(members)), replace=False)] = True
    y = torch.as_tensor(labels, dtype=torch.long)
    return images[~test], y[~test], images[test], y[test]


def digits(size: int = 8, channels: int = 1, test_fraction: float = 0.2, seed: int = 0, train_size=None):
    """scikit-learn's digits (1,797 images of 8 x 8), scaled to [0, 1], resized (bilinear) to ``size``
    x ``size`` unless that is 8.

    ``train_size`` keeps about that many training images, drawn per class like the split (the test set
    stays whole).

    Returns
    -------
    x_train, y_train, x_test, y_test : Tensor
        Images of shape ``(N, channels, size, size)`` (float32) and labels in 0..9, split per class.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the digits set ships with scikit-learn: pip install 'momentum-ode[examples]'"
        ) from None
    data = load_digits()
    images = torch.as_tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != images.shape[-1]:
        images = torch.nn.functional.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False
        )
    x_train, y_train, x_test, y_test = _split(
        images.expand(-1, channels, -1, -1).contiguous(), data.target, test_fraction, seed
    )
    if train_size is not None and train_size < len(y_train):
        x_train, y_train = _split(x_train, y_train.numpy(), 1 - train_size / len(y_train), seed)[:2]
    return x_train, y_train, x_test, y_test


def cifar10(root):
    """CIFAR-10 from a local folder holding ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``.

    Returns
    -------
    x_train, y_train, x_test, y_test : Tensor
        Images ``(N, 3, 32, 32)`` in [0, 1] and labels in 0..9.
    """
    root = Path(root)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--data {root} must hold the CIFAR-10 python batches; missing: {', '.join(missing)} "
            "(nothing is downloaded)"
        )

    def load(name):
        with open(root / name, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        x = torch.as_tensor(batch[b"data"], dtype=torch.float32).reshape(-1, 3, 32, 32) / 255.0
        return x, torch.as_tensor(batch[b"labels"], dtype=torch.long)

    train = [load(n) for n in names[:5]]
    x_test, y_test = load("test_batch")
    return torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), x_test, y_test


def python_source(files: Sequence[str]) -> tuple[torch.Tensor, dict]:
    """The bytes of standard-library source files, concatenated in the given order, for a
    character-level (byte-level) language model.

    Parameters
    ----------
    files : sequence of str
        Paths relative to the standard library's folder (``sysconfig.get_paths()["stdlib"]``), such as
        ``"argparse.py"`` or ``"json/decoder.py"``.

    Returns
    -------
    tokens : Tensor
        The bytes as a 1-D ``long`` tensor with values in 0..255.
    record : dict
        ``python`` (the version whose files these are: the text, and so every number trained on it,
        depends on it), ``files``, ``bytes`` and the ``sha256`` of the concatenation.

    Raises
    ------
    FileNotFoundError
        A file is not in this Python's standard library (the message names it and the folder).
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    missing = [name for name in files if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"standard-library files {missing} are not in {root}")
    text = b"".join((root / name).read_bytes() for name in files)
    record = {
        "python": sysconfig.get_python_version(),
        "files": list(files),
        "bytes": len(text),
        "sha256": hashlib.sha256(text).hexdigest(),
    }
    return torch.frombuffer(bytearray(text), dtype=torch.uint8).long(), record
