"""Model manifests: what a version is and what it was trained on; written and read here only.

Each version folder (``<home>/models/<kind>/<version>/``) holds ``manifest.json`` and a
``README.md`` model card (a Hugging Face model card: YAML front matter with ``library_name``,
``base_model`` and ``pipeline_tag``, then data, metrics and, for classifiers, the out-of-scope
threshold), both written by :func:`save` when training saves the version.

Two kinds, one shape for the data's provenance (``data = {name, sha256, split_seed, ...}``):
:class:`IntentManifest` (``kind = "intents"``) and :class:`ReplyManifest` (``kind = "replies"``).
Replies versions written before this module have ``data = <name>`` with top-level
``data_sha256``, ``split_seed`` and ``split_sizes``; :func:`read` converts them. Fields this
module does not name are kept as they are.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from bot.errors import SupportbotError

MANIFEST = "manifest.json"
CARD = "README.md"


class DataRef(BaseModel):
    """The data a version was trained on.

    Attributes:
        name: built-in data set name or file path, as given to training.
        sha256: hex digest of the data file(s) (``training.data.LoadedData.sha256``).
        split_seed: the seed of the train/validation/test split.
        split_sizes: rows per part (``{"train": 900, ...}``).
        held_out_intents: intents left out of training on purpose (classifiers' open-set test).
        test: the user's own test file, if one was given (classifiers).
    """

    model_config = ConfigDict(extra="allow")

    name: str
    sha256: str | None = None
    split_seed: int | None = None
    split_sizes: dict[str, int] = {}
    held_out_intents: list[str] = []
    test: str | None = None


class OosSettings(BaseModel):
    """A classifier's out-of-scope rule: ``oos_score > threshold`` (on the ``method``'s scale,
    :data:`bot.classifier.OOS_METHODS`) is out of scope; for ``msp+knn``, ``msp_threshold`` is the
    head's own threshold and ``knots["knn"]`` the distance's quantiles
    (:func:`bot.classifier.combined_score`); further fields are the calibration's figures."""

    model_config = ConfigDict(extra="allow")

    method: str
    threshold: float
    knots: dict[str, list[float]] = {}
    msp_threshold: float | None = None


class Manifest(BaseModel):
    """What both kinds record. ``created`` (UTC ISO time) and ``software`` (python, torch and
    transformers versions) are filled in by :func:`save`."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["intents", "replies"]
    base_model: str = ""
    data: DataRef
    hyperparameters: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    created: str = ""
    software: dict[str, str] = {}

    @model_validator(mode="before")
    @classmethod
    def _one_data_shape(cls, fields: Any) -> Any:
        """The old replies shape (``data`` a name, provenance at the top level) in the one shape."""
        if isinstance(fields, dict) and isinstance(fields.get("data"), str):
            fields = dict(fields)
            fields["data"] = {"name": fields.pop("data"), "sha256": fields.pop("data_sha256", None),
                              "split_seed": fields.pop("split_seed", None),
                              "split_sizes": fields.pop("split_sizes", None) or {}}
        return fields


class IntentManifest(Manifest):
    """An intent classifier: ``method`` (``finetune`` or ``head``), ``labels`` (index = class
    id), the out-of-scope rule ``oos`` and ``training`` figures (wall time, epochs, ...)."""

    kind: Literal["intents"] = "intents"
    method: str = ""
    labels: list[str] = []
    oos: OosSettings
    training: dict[str, Any] = {}


class ReplyManifest(Manifest):
    """A reply generator (LoRA adapter): where its base model was found, the serving prompt,
    whether ``merged/`` exists, ``retrieval`` (the answer store it was trained with), and ``slots``: the placeholder names of its training replies,
    the only ones serving allows (None: trained before manifests listed them)."""

    kind: Literal["replies"] = "replies"
    base_model_path: str | None = None
    train_examples: int | None = None
    device: dict[str, Any] = {}
    train_wall_seconds: float | None = None
    prompt: dict[str, str] = {}
    merged: bool = False
    slots: list[str] | None = None
    retrieval: dict[str, Any] | None = None
    """Set when the version was trained on retrieval-augmented prompts (:mod:`bot.answers`):
    ``{"k": answers per prompt, "encoder": sentence encoder, "per_intent": training answers kept
    per intent, "answers": how many}``; its answer store lies beside it (``answers.jsonl``)."""


AnyManifest = Annotated[Union[IntentManifest, ReplyManifest], Field(discriminator="kind")]
_ANY = TypeAdapter(AnyManifest)
_CARD_KIND = {"intents": ("transformers", "text-classification", "Intent classifier"),
              "replies": ("peft", "text-generation", "Reply generator (LoRA adapter)")}


def read(folder: Path, kind: str | None = None) -> IntentManifest | ReplyManifest:
    """The manifest of a version folder (old shapes converted, see the module docstring).

    Args:
        folder: the version folder.
        kind: ``"intents"`` or ``"replies"`` to refuse the other kind; None takes either.

    Raises:
        SupportbotError: no manifest.json, not JSON, a missing or ill-typed field, or the wrong
            kind (one line naming the file and field).
    """
    path = Path(folder) / MANIFEST
    try:
        fields = json.loads(path.read_text())
    except FileNotFoundError:
        raise SupportbotError(f"{folder}: not a supportbot model folder (no {MANIFEST})") from None
    except json.JSONDecodeError as exc:
        raise SupportbotError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    try:
        manifest = _ANY.validate_python(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"][1:]) or "kind"
        if error["type"] in ("missing", "union_tag_not_found"):
            raise SupportbotError(f"{path}: missing field '{where}'") from None
        raise SupportbotError(f"{path}: field '{where}': {error['msg']}") from None
    if kind is not None and manifest.kind != kind:
        raise SupportbotError(f"{path}: a {manifest.kind} manifest, expected {kind}")
    return manifest


def save(folder: Path, manifest: IntentManifest | ReplyManifest) -> IntentManifest | ReplyManifest:
    """Write ``folder/manifest.json`` and the model card ``folder/README.md``; ``created`` and
    ``software`` are set now. Returns the manifest written."""
    manifest = manifest.model_copy(update={
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": {"python": platform.python_version(), "torch": _version("torch"),
                     "transformers": _version("transformers")},
    })
    folder = Path(folder)
    (folder / MANIFEST).write_text(json.dumps(manifest.model_dump(), indent=2, default=str) + "\n")
    (folder / CARD).write_text(model_card(manifest))
    return manifest


def model_card(manifest: IntentManifest | ReplyManifest) -> str:
    """The version's Hugging Face model card (``README.md``): YAML front matter, then the data,
    the metrics and, for a classifier, the out-of-scope rule."""
    from huggingface_hub import ModelCardData

    library, pipeline, title = _CARD_KIND[manifest.kind]
    meta = ModelCardData(library_name=library, base_model=manifest.base_model or None, pipeline_tag=pipeline,
                         tags=["supportbot", manifest.kind])
    data = manifest.data
    lines = [f"---\n{meta.to_yaml()}\n---", f"# {title}", "",
             f"Trained by supportbot ({manifest.created}) from `{manifest.base_model}`.", "", "## Data", "",
             f"- name: `{data.name}`", f"- sha256: `{data.sha256}`", f"- split seed: {data.split_seed}",
             *([f"- rows: {', '.join(f'{part} {n}' for part, n in data.split_sizes.items())}"] if data.split_sizes else []),
             "", "## Metrics", "", "| metric | value |", "|---|---|",
             *(f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
               for name, value in manifest.metrics.items() if isinstance(value, (int, float, str))), ""]
    if isinstance(manifest, IntentManifest):
        oos = manifest.oos
        lines += ["## Out-of-scope threshold", "",
                  f"A message is out of scope when its `{oos.method}` score is above **{oos.threshold:.6g}**"]
        if oos.method == "msp+knn":
            lines[-1] += (": when 1 - the largest in-scope probability (`msp`) is above "
                          f"**{oos.msp_threshold:.6g}**, or the distance to the nearest in-scope training row "
                          "(`oos_neighbours.safetensors`) is beyond the level calibrated for it. A plain transformers "
                          "pipeline can apply the head-only rule (`config.json`: `oos_threshold`).")
        else:
            lines[-1] += " (also in `config.json` as `oos_threshold`)."
        lines.append("")
    return "\n".join(lines)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
