"""The built-in data sets: where each lives publicly, its sha256, and how to find it locally.

A built-in data set is looked for in ``<data_dir>/<folder>/<file>`` first (setting ``data_dir``,
variable ``SUPPORTBOT_DATA_DIR``), then in ``<home>/data``; when missing it is downloaded with
pooch (https://www.fatiando.org/pooch/), which checks the sha256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bot.errors import DataError, SupportbotError


@dataclass(frozen=True)
class RemoteFile:
    """One file of a built-in data set: public ``url``, ``sha256`` and local ``name``."""

    name: str
    url: str
    sha256: str


@dataclass(frozen=True)
class BuiltinDataset:
    """A public data set the project knows.

    Attributes:
        name: short name used on the command line (``bitext``, ``banking77``).
        folder: folder name under the data directory.
        train: the file with the training rows.
        test: the publisher's test file, when the data set has an official split.
        columns: our field -> the file's column (``text``, ``intent``, optional ``reply``).
    """

    name: str
    folder: str
    train: RemoteFile
    test: RemoteFile | None
    columns: dict[str, str]


_BITEXT_URL = (
    "https://raw.githubusercontent.com/bitext/customer-support-llm-chatbot-training-dataset/"
    "337b96868e02b40a05f9c0df3290c65a15ea573e/data/train/"
    "Bitext_Sample_Customer_Support_Training_Dataset.csv"
)
_BANKING_URL = (
    "https://raw.githubusercontent.com/PolyAI-LDN/task-specific-datasets/"
    "57ec275d8078af65b7731c2a98be812d844a6d6b/banking_data/"
)

BUILTIN: dict[str, BuiltinDataset] = {
    "bitext": BuiltinDataset(
        name="bitext",
        folder="bitext-customer-support",
        train=RemoteFile(
            "bitext_customer_support_v1.csv",
            _BITEXT_URL,
            "079b0cec48d34c319c9877b6d178390bf7187a7f7a604958e0ed5a096bba5af6",
        ),
        test=None,
        columns={"text": "instruction", "intent": "intent", "reply": "response"},
    ),
    "banking77": BuiltinDataset(
        name="banking77",
        folder="banking77",
        train=RemoteFile(
            "train.csv",
            _BANKING_URL + "train.csv",
            "b06e26ac675513959a63135f11b94ea7786ed02da65db93a5650d8838cbc664b",
        ),
        test=RemoteFile(
            "test.csv",
            _BANKING_URL + "test.csv",
            "d12d6e3bc4c3103966ae786dc435913c0c563dfa328f5a3646d0e62cfeeb474d",
        ),
        columns={"text": "text", "intent": "category"},
    ),
}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate(dataset: BuiltinDataset, remote: RemoteFile, data_dir: Path | None, home: Path) -> Path:
    """Local path of one file of a built-in data set, downloading it when it is nowhere local.

    Raises:
        SupportbotError: the local file's sha256 differs from the published one, or the download
            failed (no network and no local copy).
    """
    for root in [d for d in (data_dir, home / "data") if d is not None]:
        candidate = Path(root) / dataset.folder / remote.name
        if candidate.is_file():
            _verify(candidate, remote)
            return candidate
    return _download(dataset, remote, home / "data")


def _verify(path: Path, remote: RemoteFile) -> None:
    actual = sha256_of(path)
    if actual != remote.sha256:
        raise DataError(
            path,
            f"sha256 is {actual}, expected {remote.sha256} (the published file, {remote.url}); "
            "the file is damaged or a different version: delete it to download again",
        )


def _download(dataset: BuiltinDataset, remote: RemoteFile, target: Path) -> Path:
    import pooch

    try:
        fetched = pooch.retrieve(
            remote.url,
            known_hash=f"sha256:{remote.sha256}",
            fname=remote.name,
            path=target / dataset.folder,
            progressbar=False,
        )
    except ValueError as exc:  # pooch raises ValueError on a hash mismatch
        raise SupportbotError(f"{remote.url}: {exc}") from None
    except Exception as exc:  # network errors come in many classes (requests, OSError, ...)
        raise SupportbotError(
            f"data set '{dataset.name}' is not in the data directory and could not be downloaded "
            f"from {remote.url} ({type(exc).__name__}: {exc}); set SUPPORTBOT_DATA_DIR to a folder "
            f"holding {dataset.folder}/{remote.name}"
        ) from None
    return Path(fetched)
