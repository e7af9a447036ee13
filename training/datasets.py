"""The built-in data sets: where each lives publicly, its sha256, and how to find it locally.

A built-in data set is looked for in ``<data_dir>/<folder>/<file>`` first (setting ``data_dir``,
variable ``SUPPORTBOT_DATA_DIR``), then in ``<home>/data``; when missing it is downloaded with
pooch (https://www.fatiando.org/pooch/), which checks the sha256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import DataError, SupportbotError


@dataclass(frozen=True)
class RemoteFile:
    """One file of a built-in data set: public ``url``, ``sha256`` and local ``name``.

    ``lines``, when set, names two public line files (utterances, labels) from which the CSV
    (header ``text,intent``) is built on download; ``sha256`` is then the built CSV's.
    """

    name: str
    url: str
    sha256: str
    lines: tuple[str, str] | None = None


@dataclass(frozen=True)
class BuiltinDataset:
    """A public data set the project knows.

    Attributes:
        name: short name used on the command line (``bitext``, ``banking77``).
        folder: folder name under the data directory.
        train: the file with the training rows.
        test: the publisher's test file, when the data set has an official split.
        columns: our field -> the file's column (``text``, ``intent``, optional ``reply``).
        conversational: intents that are conversation moves (yes, no, thanks, repeat, ...) ->
            the small-talk intent whose replies fit them, or None. They are never out-of-scope
            examples when the data set serves as the background set, since a shop's bot answers
            them in the conversation; with small talk on, up to
            :data:`training.intents.MOVES_PER_INTENT` rows of each mapped move teach its
            small-talk intent.
        customer_words: a file under ``training/builtin/`` of training rows written for the
            project in customers' own words (short, informal, indirect, with concrete details),
            which the publisher's templated rows lack; :func:`training.intents.prepare` adds them
            to the training and validation rows, never to the test split.
    """

    name: str
    folder: str
    train: RemoteFile
    test: RemoteFile | None
    columns: dict[str, str]
    conversational: dict[str, str | None] = field(default_factory=dict)
    customer_words: str | None = None


_BITEXT_URL = (
    "https://raw.githubusercontent.com/bitext/customer-support-llm-chatbot-training-dataset/"
    "337b96868e02b40a05f9c0df3290c65a15ea573e/data/train/"
    "Bitext_Sample_Customer_Support_Training_Dataset.csv"
)
_HWU64_URL = (
    "https://raw.githubusercontent.com/jianguoz/Few-Shot-Intent-Detection/"
    "fa9553312b1dba54b1be0aae2d30b13171f898e5/Datasets/HWU64/"
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
        customer_words="bitext_customer_words.csv",
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
    # Personal-assistant requests (alarms, music, weather, ...): out of scope for a shop, the
    # default background set of out-of-scope examples (train split only); its test split is
    # kept for evaluation. CC BY 4.0, Liu et al. 2019 (IWSDS).
    "hwu64": BuiltinDataset(
        name="hwu64",
        folder="hwu64",
        train=RemoteFile(
            "train.csv", _HWU64_URL + "train/",
            "68bcd579d60e6c88f1924ecd5ff5849bbf909774307253a98edbe2f73a6532cc",
            lines=(_HWU64_URL + "train/seq.in", _HWU64_URL + "train/label"),
        ),
        test=RemoteFile(
            "test.csv", _HWU64_URL + "test/",
            "5c97c2d70f8d8581d30c59d04e60a47da5dc4cf5cbf60c25be6b141b090ad18e",
            lines=(_HWU64_URL + "test/seq.in", _HWU64_URL + "test/label"),
        ),
        columns={"text": "text", "intent": "intent"},
        conversational={"general_affirm": "smalltalk_affirm", "general_negate": "smalltalk_negate",
                        "general_praise": "smalltalk_thanks", "general_commandstop": None,
                        "general_confirm": None, "general_dontcare": None, "general_explain": None,
                        "general_repeat": None},
    ),
}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate(dataset: BuiltinDataset, remote: RemoteFile, data_dir: Path | None, home: Path | None) -> Path:
    """Local path of one file of a built-in data set (in ``data_dir``, then ``home/data``),
    downloading it into ``home/data`` when it is nowhere local.

    Raises:
        SupportbotError: the local file's sha256 differs from the published one, or it is not
            local and cannot be downloaded (no ``home`` given, or no network).
    """
    roots = [Path(d) for d in (data_dir, home and Path(home) / "data") if d is not None]
    for root in roots:
        candidate = root / dataset.folder / remote.name
        if candidate.is_file():
            _verify(candidate, remote)
            return candidate
    if home is None:
        raise SupportbotError(f"{dataset.name}: {remote.name} is not in data_dir ({data_dir}) and there is no home "
                              "to download it into; set data_dir or home")
    return _download(dataset, remote, Path(home) / "data")


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

    folder = target / dataset.folder
    try:
        if remote.lines is None:
            fetched = Path(pooch.retrieve(remote.url, known_hash=f"sha256:{remote.sha256}", fname=remote.name,
                                          path=folder, progressbar=False))
        else:
            fetched = _csv_from_lines(remote, folder, [
                Path(pooch.retrieve(url, known_hash=None, fname=f"{remote.name}.{Path(url).name}",
                                    path=folder, progressbar=False)) for url in remote.lines])
    except ValueError as exc:  # pooch raises ValueError on a hash mismatch
        raise SupportbotError(f"{remote.url}: {exc}") from None
    except SupportbotError:
        raise
    except Exception as exc:  # network errors come in many classes (requests, OSError, ...)
        raise SupportbotError(
            f"data set '{dataset.name}' is not in the data directory and could not be downloaded "
            f"from {remote.url} ({type(exc).__name__}: {exc}); set SUPPORTBOT_DATA_DIR to a folder "
            f"holding {dataset.folder}/{remote.name}"
        ) from None
    return fetched


def _csv_from_lines(remote: RemoteFile, folder: Path, parts: list[Path]) -> Path:
    """Write ``folder/remote.name`` (``text,intent``) from an utterance file and a label file
    of equal length, then check its sha256.

    Raises:
        DataError: the files differ in length or the CSV is not the published one.
    """
    import csv

    texts, labels = (p.read_text(encoding="utf-8").splitlines() for p in parts)
    if len(texts) != len(labels):
        raise DataError(parts[0], f"{len(texts)} utterances but {len(labels)} labels in {parts[1]}")
    path = folder / remote.name
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)  # "\r\n" line ends, as the published sha256 was taken
        writer.writerow(["text", "intent"])
        writer.writerows(zip(texts, labels))
    _verify(path, remote)
    return path
