"""MedGround-Bench: causally verified CXR-VQA items on user-provided images (see docs/benchmark-protocol.md).

A split file lists, per model, the ``(dataset, index)`` items that survived the
causal filter. The images and boxes are credentialed (PhysioNet, Kaggle), so users
point ``CXR_ATTRIB_DATA`` (or ``root=``) at a folder laid out like this (each path
can be changed through :class:`MedGroundLayout`; an absolute path is used as is)::

    <root>/medground_bench/direct.json           released direct split
    <root>/medground_bench/reasoning.json        reasoning split (optional)
    <root>/imagenome/gold_object_attribute_with_coordinates.txt   Chest ImaGenome 1.0.0 gold
    <root>/mimic-cxr-jpg/2.1.0/files/p10/p10000032/s50414267/<dicom_id>.jpg
    <root>/vindr_cxr/annotations/annotations_test.csv             VinDr-CXR 1.0.0
    <root>/vindr_cxr/test/<image_id>.dicom
    <root>/padchest_gr/filtered_studies.json     PadChest-GR studies list
    <root>/padchest_gr/images/<ImageID>          PadChest-GR PNGs

Only the files of the datasets a split actually uses are needed. Nothing is ever
written under the root. How each dataset's ``index`` is numbered is documented in
:mod:`.imagenome`, :mod:`.vindr` and :mod:`.padchest`; the PadChest-GR indices hold
only for the same studies list, in the same order, that the benchmark was built from.
Boxes are native pixels with exclusive ends, as recorded (continuous coordinates; the
published code rounded VinDr-CXR and PadChest-GR boxes to whole pixels, a difference
of at most half a pixel per side).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePath
from typing import Any, ClassVar, Literal

from ..benchmark import Benchmark, Sample, path_under
from ..errors import DataError, UnknownNameError
from ..hookspecs import hookimpl
from ..safeio import read_bytes, regular_file_exists
from ..targets import finding_question
from ..typing import BoxArray, GreyImage
from .imagenome import ImaGenomeItem, load_imagenome
from .padchest import PadChestItem, image_size, load_padchest, to_pixels
from .vindr import VinDrItem, load_vindr

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "MedGroundBench",
    "MedGroundLayout",
    "MedGroundRecord",
    "SplitCounts",
    "UnknownSplitError",
    "load_split",
    "resolve_data_root",
    "split_counts",
]

ENV_VAR = "CXR_ATTRIB_DATA"
"""Environment variable naming the data root."""

DATASETS = ("imagenome", "vindr_cxr", "padchest_gr")
"""The source datasets a record may name."""
_SPLITS = {"direct": "direct", "reasoning": "cot"}  # split -> record key suffix
_ALIASES = {"cot": "reasoning"}
_FIELDS = ("prediction", "prediction_edited", "prediction_edited_kept",
           "prediction_edited_kept_normal")


class UnknownSplitError(UnknownNameError):
    """A split name MedGround-Bench does not have."""

    kind = "split"


@dataclass(frozen=True)
class MedGroundLayout:
    """Where each file lives, relative to the data root (an absolute path is kept).

    Attributes:
        splits (str): folder of ``direct.json`` and ``reasoning.json``.
            Default: ``"medground_bench"``.
        imagenome_gold (str): Chest ImaGenome gold TSV.
            Default: ``"imagenome/gold_object_attribute_with_coordinates.txt"``.
        mimic_cxr_jpg (str): MIMIC-CXR-JPG ``files`` folder.
            Default: ``"mimic-cxr-jpg/2.1.0/files"``.
        vindr_annotations (str): VinDr-CXR test annotations CSV.
            Default: ``"vindr_cxr/annotations/annotations_test.csv"``.
        vindr_images (str): folder of VinDr-CXR test DICOMs.
            Default: ``"vindr_cxr/test"``.
        padchest_studies (str): PadChest-GR studies JSON.
            Default: ``"padchest_gr/filtered_studies.json"``.
        padchest_images (str): folder of PadChest-GR images.
            Default: ``"padchest_gr/images"``.

    Examples::

        >>> MedGroundLayout(padchest_images="/data/PadChest_GR").describe().splitlines()[-1]
        '  /data/PadChest_GR/<ImageID>'
    """

    splits: str = "medground_bench"
    imagenome_gold: str = "imagenome/gold_object_attribute_with_coordinates.txt"
    mimic_cxr_jpg: str = "mimic-cxr-jpg/2.1.0/files"
    vindr_annotations: str = "vindr_cxr/annotations/annotations_test.csv"
    vindr_images: str = "vindr_cxr/test"
    padchest_studies: str = "padchest_gr/filtered_studies.json"
    padchest_images: str = "padchest_gr/images"

    def describe(self) -> str:
        """The expected layout, one indented path per line, for error messages."""
        paths = (
            f"{self.splits}/direct.json",
            self.imagenome_gold,
            f"{self.mimic_cxr_jpg}/p10/p10000032/s50414267/<dicom_id>.jpg",
            self.vindr_annotations,
            f"{self.vindr_images}/<image_id>.dicom",
            self.padchest_studies,
            f"{self.padchest_images}/<ImageID>",
        )
        return "\n".join(f"  {PurePath('<root>', path)}" for path in paths)


def resolve_data_root(
    root: str | os.PathLike[str] | None = None,
    *,
    layout: MedGroundLayout = MedGroundLayout(),
) -> Path:
    """The data root: ``root`` if given, else ``$CXR_ATTRIB_DATA``; never a guess.

    Args:
        root (str | os.PathLike | None): explicit data root. Default: None (use the
            environment variable).
        layout (MedGroundLayout): the layout the error messages show.
            Default: ``MedGroundLayout()``.

    Returns:
        Path: an existing folder.

    Raises:
        DataError: neither is set (an empty variable counts as unset), or the folder
            does not exist; the message shows the expected layout.
    """
    source = "root="
    if root is None:
        value = os.environ.get(ENV_VAR, "").strip()
        if not value:
            raise DataError(
                f"MedGround-Bench needs its data root: set {ENV_VAR} (or pass root=) to a "
                f"folder laid out as\n{layout.describe()}"
            )
        root, source = value, f"{ENV_VAR}="
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(
            f"MedGround-Bench data root {source}{str(root)!r} is not a folder; point "
            f"{ENV_VAR} (or root=) at a folder laid out as\n{layout.describe()}"
        )
    return path


@dataclass(frozen=True)
class MedGroundRecord:
    """One released record: an item verified for one model.

    Attributes:
        model (str): model registry key, e.g. ``"qwen2_5_vl_3b"``.
        dataset (str): ``"imagenome"``, ``"vindr_cxr"`` or ``"padchest_gr"``.
        index (int): the item's index in its dataset (see the dataset modules).
        answer (str): reference answer (``"Yes"``).
        mode (str): ``"direct"`` (keys ``*_direct``) or ``"reasoning"`` (``*_cot``).
        prediction (str): the model's output on the original image.
        prediction_edited (str): output with the finding edited out inside its box.
        prediction_edited_kept (str): output with the outside edited ("No {finding}").
        prediction_edited_kept_normal (str): output with the outside edited
            ("No abnormality").
    """

    model: str
    dataset: str
    index: int
    answer: str
    mode: Literal["direct", "reasoning"]
    prediction: str
    prediction_edited: str
    prediction_edited_kept: str
    prediction_edited_kept_normal: str


def load_split(path: str | os.PathLike[str]) -> list[MedGroundRecord]:
    """Read and validate a split file (``direct.json`` or ``reasoning.json``).

    The mode comes from the first record (``prediction_direct`` or
    ``prediction_cot``); every record must then carry model, dataset, index, answer
    and the four prediction keys of that mode, and (model, dataset, index) must be
    unique.

    Args:
        path (str | os.PathLike): the split JSON (a list of records).

    Returns:
        list[MedGroundRecord]: in file order.

    Raises:
        DataError: unreadable file, or a record with a missing or mistyped key, an
            unknown dataset or a duplicate (names the file and the record's position).
    """
    path = Path(path)
    try:
        data = json.loads(read_bytes(path, what="MedGround-Bench split").decode("utf-8"))
    except OSError as error:
        raise DataError(f"cannot read MedGround-Bench split {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON: {error}") from error
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error}); save the split as UTF-8 JSON.") from error
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}.")
    if not data:
        return []
    first = data[0] if isinstance(data[0], dict) else {}
    mode = next((m for m, suffix in _SPLITS.items() if f"prediction_{suffix}" in first), None)
    if mode is None:
        raise DataError(
            f"{path}, record [0]: expected key 'prediction_direct' or 'prediction_cot'; "
            f"got keys {sorted(first)}."
        )
    keys = {field: f"{field}_{_SPLITS[mode]}" for field in _FIELDS}
    records: list[MedGroundRecord] = []
    seen: dict[tuple[str, str, int], int] = {}
    for number, raw in enumerate(data):
        where = f"{path}, record [{number}]"
        if not isinstance(raw, dict):
            raise DataError(f"{where}: expected an object, got {type(raw).__name__}.")
        for key in ("model", "dataset", "index", "answer", *keys.values()):
            if key not in raw:
                raise DataError(
                    f"{where}: missing key {key!r}; a {mode} record needs model, dataset, "
                    f"index, answer, {', '.join(keys.values())}."
                )
        texts = ("model", "dataset", "answer", *keys.values())
        bad = [key for key in texts if not isinstance(raw[key], str)]
        index = raw["index"]
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            bad.append("index")
        if bad:
            raise DataError(
                f"{where}: {', '.join(bad)} must be strings (index a non-negative integer); "
                f"got {({key: raw[key] for key in bad})!r}."
            )
        if raw["dataset"] not in DATASETS:
            raise DataError(
                f"{where}: unknown dataset {raw['dataset']!r}; expected one of {DATASETS}."
            )
        key = (raw["model"], raw["dataset"], index)
        if key in seen:
            raise DataError(f"{where}: duplicates record [{seen[key]}] {key}.")
        seen[key] = number
        predictions = {field: raw[name] for field, name in keys.items()}
        records.append(
            MedGroundRecord(raw["model"], raw["dataset"], index, raw["answer"], mode,
                            **predictions)
        )
    return records


@dataclass(frozen=True)
class SplitCounts:
    """How many records a split has, in total and per model, dataset and answer.

    Attributes:
        records (int): number of records.
        models (dict[str, int]): records per model, sorted by name.
        datasets (dict[str, int]): records per dataset, sorted by name.
        items (int): distinct ``(dataset, index)`` items.
        answers (dict[str, int]): records per reference answer.
    """

    records: int
    models: dict[str, int]
    datasets: dict[str, int]
    items: int
    answers: dict[str, int]


def split_counts(records: list[MedGroundRecord]) -> SplitCounts:
    """Count a split's records (the paper's sample table).

    Args:
        records (list[MedGroundRecord]): from :func:`load_split`.

    Returns:
        SplitCounts: totals per model, dataset and answer, and distinct items.
    """

    def tally(values: Iterator[str]) -> dict[str, int]:
        return dict(sorted(Counter(values).items()))

    return SplitCounts(
        records=len(records),
        models=tally(r.model for r in records),
        datasets=tally(r.dataset for r in records),
        items=len({(r.dataset, r.index) for r in records}),
        answers=tally(r.answer for r in records),
    )


def _read_grey(path: Path) -> GreyImage:
    from ..imageio import load_image

    return load_image(path).pixels


class MedGroundBench(Benchmark):
    """The MedGround-Bench splits joined to the user's copies of the three datasets.

    Nothing is read when the object is made (so it can be registered without data);
    each dataset's annotations are parsed once, on first use, and kept in memory.

    Args:
        root (str | os.PathLike | None): the data root. Default: None (read
            ``$CXR_ATTRIB_DATA`` at each :meth:`samples` call).
        layout (MedGroundLayout): file locations under the root.
            Default: ``MedGroundLayout()``.
    """

    name: ClassVar[str] = "medground"
    summary: ClassVar[str] = (
        "MedGround-Bench: CXR questions whose evidence boxes were causally verified per "
        "model (ImaGenome, VinDr-CXR, PadChest-GR; user-provided images)."
    )

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        layout: MedGroundLayout = MedGroundLayout(),
    ) -> None:
        self._root = root
        self.layout = layout
        self._cache: dict[tuple[str, Path], list[Any]] = {}
        self._sizes: dict[Path, tuple[int, int]] = {}

    def _require(self, path: Path, what: str) -> Path:
        if not regular_file_exists(path, what=f"MedGround-Bench {what}"):
            raise DataError(
                f"MedGround-Bench needs {what} at {path}, which does not exist. Expected "
                f"the data root laid out as\n{self.layout.describe()}"
            )
        return path

    def _items(self, root: Path, dataset: str) -> list[Any]:
        relative, what, load = {
            "imagenome": (self.layout.imagenome_gold, "the Chest ImaGenome gold file",
                          load_imagenome),
            "vindr_cxr": (self.layout.vindr_annotations, "the VinDr-CXR test annotations",
                          load_vindr),
            "padchest_gr": (self.layout.padchest_studies, "the PadChest-GR studies file",
                            load_padchest),
        }[dataset]
        path = self._require(root / relative, what)
        if (dataset, path) not in self._cache:
            self._cache[dataset, path] = load(path)
        return self._cache[dataset, path]

    def _split_path(self, root: Path, split: str) -> Path:
        return root / self.layout.splits / f"{split}.json"

    def samples(self, *, split: str | None = None, model: str | None = None) -> Iterator[Sample]:
        """Yield the samples of a split, in file order.

        Args:
            split (str | None): ``"direct"``, ``"reasoning"`` (alias ``"cot"``), or
                None for every split whose file exists. Default: None.
            model (str | None): only records verified for this model registry key;
                a model the split does not list yields nothing. Default: None (all).

        Yields:
            Sample: id ``"{split}/{dataset}/{index}/{model}"``, boxes (N, 4) float64
            in native pixels, a lazy image loader.

        Raises:
            DataError: missing data root or file, malformed annotations, or an index
                beyond what the user's annotation files yield.
            UnknownSplitError: an unknown split name.
        """
        root = resolve_data_root(self._root, layout=self.layout)
        if split is None:
            names = [s for s in _SPLITS if self._split_path(root, s).is_file()] or ["direct"]
        else:
            names = [_canonical(split)]
        for name in names:
            path = self._require(self._split_path(root, name), f"the {name} split")
            records = load_split(path)
            if records and records[0].mode != name:
                raise DataError(
                    f"{path} holds {records[0].mode} records (keys *_{_SPLITS[records[0].mode]}),"
                    f" not {name} ones (keys *_{_SPLITS[name]})."
                )
            for record in records:
                if model is None or record.model == model:
                    yield self._sample(root, name, record)

    def _sample(self, root: Path, split: str, record: MedGroundRecord) -> Sample:
        items = self._items(root, record.dataset)
        if record.index >= len(items):
            raise DataError(
                f"MedGround-Bench record {record.dataset}/{record.index} ({record.model}) has "
                f"no item: the {record.dataset} annotations under {root} yield only "
                f"{len(items)} items. Use the unmodified release files the layout names."
            )
        item = items[record.index]
        build: Callable[[Path, Any], tuple[Path, BoxArray, dict]] = {
            "imagenome": self._imagenome,
            "vindr_cxr": self._vindr,
            "padchest_gr": self._padchest,
        }[record.dataset]
        path, boxes, extra = build(root, item)
        extra |= {
            "image_path": str(path),
            "predictions": {field: getattr(record, field) for field in _FIELDS},
        }
        return Sample(
            id=f"{split}/{record.dataset}/{record.index}/{record.model}",
            dataset=record.dataset,
            index=record.index,
            finding=item.finding,
            question=finding_question(item.finding),
            answer=record.answer,
            boxes=boxes,
            load_image=partial(_read_grey, path),
            model=record.model,
            mode=record.mode,
            split=split,
            extra=extra,
        )

    def _imagenome(self, root: Path, item: ImaGenomeItem) -> tuple[Path, BoxArray, dict]:
        path = path_under(root / self.layout.mimic_cxr_jpg, item.image_relpath,
                          source=f"{root / self.layout.imagenome_gold}, lines {list(item.lines)}",
                          field="patient_id/study_id/image_id")
        extra = {"patient_id": item.patient_id, "study_id": item.study_id,
                 "dicom_id": item.dicom_id, "category": item.category,
                 "source_lines": list(item.lines)}
        return path, item.boxes, extra

    def _vindr(self, root: Path, item: VinDrItem) -> tuple[Path, BoxArray, dict]:
        path = path_under(root / self.layout.vindr_images, item.image_relpath,
                          source=f"{root / self.layout.vindr_annotations}, lines {list(item.lines)}",
                          field="image_id")
        return path, item.boxes, {"image_id": item.image_id, "source_lines": list(item.lines)}

    def _padchest(self, root: Path, item: PadChestItem) -> tuple[Path, BoxArray, dict]:
        path = path_under(root / self.layout.padchest_images, item.image_relpath,
                          source=f"{root / self.layout.padchest_studies}, study [{item.study}]", field="ImageID")
        if path not in self._sizes:
            self._sizes[path] = image_size(path)
        width, height = self._sizes[path]
        boxes = to_pixels(item.relative_boxes, width, height)
        boxes.flags.writeable = False
        extra = {"image_id": item.image_id, "study": item.study,
                 "finding_number": item.finding_number, "image_size": [width, height]}
        return path, boxes, extra


def _canonical(split: str) -> str:
    name = _ALIASES.get(split, split)
    if name not in _SPLITS:
        raise UnknownSplitError(split, [*_SPLITS, *_ALIASES])
    return name


@hookimpl
def register_benchmarks(register: Callable[..., None]) -> None:
    """Register MedGround-Bench as ``"medground"``."""
    register(MedGroundBench(), name="medground")
