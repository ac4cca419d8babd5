"""What a benchmark is: a named source of samples with causally verified regions.

Benchmarks register through the ``register_benchmarks(register)`` hook, like
methods and adapters. A :class:`Sample` carries everything the scorer and the
leaderboard need; its image is loaded lazily so listing a benchmark is cheap.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import ClassVar

from .counterfactuals import CounterfactualProvider
from .errors import DataError
from .sample import Sample

__all__ = ["Sample", "Benchmark", "path_under"]


def path_under(folder: str | os.PathLike, relative: str, *, source: str, field: str) -> Path:
    """``folder / relative`` for a path read from a data file, refusing any escape.

    A data file is not trusted to name files outside its data folder: ``relative``
    must be a non-empty relative path without ``..`` parts (in POSIX or Windows
    spelling), and the joined path, with every symlink resolved, must stay inside
    the resolved ``folder``.

    Args:
        folder (str | PathLike): the data folder the file names images in.
        relative (str): the value read from the data file (e.g. PadChest's ``ImageID``).
        source (str): where the value was read, for messages (file and record).
        field (str): the field that held it, for messages.

    Returns:
        Path: ``folder / relative`` (not resolved).

    Raises:
        DataError: an absolute path, a ``..`` part, a NUL byte, or a symlink leading
            outside ``folder``; the message names the source, field and value.

    Examples::

        >>> path_under("/data/images", "a/b.png", source="studies.json", field="ImageID").as_posix()
        '/data/images/a/b.png'
    """
    def refuse(problem: str) -> DataError:
        return DataError(
            f"{source}: field {field!r} = {relative!r} {problem}; image paths in a data file must be "
            f"relative paths inside the data folder {os.fspath(folder)!r}. Fix or remove that entry"
        )

    if not isinstance(relative, str) or not relative.strip() or "\0" in relative:
        raise refuse("is not a usable file name")
    windows = PureWindowsPath(relative)
    if PurePosixPath(relative).is_absolute() or windows.drive or windows.root:
        raise refuse("is an absolute path")
    if ".." in PurePosixPath(relative).parts or ".." in windows.parts:
        raise refuse("climbs out of its folder with '..'")
    path = Path(folder) / relative
    base = Path(folder).resolve()
    if not path.resolve().is_relative_to(base):
        raise refuse(f"leads outside the data folder (resolves to {str(path.resolve())!r})")
    return path


class Benchmark(ABC):
    """A named, registered source of :class:`Sample` objects.

    Subclasses set ``name`` and ``summary`` and implement :meth:`samples`; a
    benchmark that can make exact counterfactuals of its own samples (the causal
    filter's edits) also overrides :meth:`counterfactual_provider`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    has_boxes: ClassVar[bool] = True
    """Whether its samples carry ground-truth boxes (False: no ``truth`` reference row)."""

    @abstractmethod
    def samples(self, *, split: str | None = None, model: str | None = None) -> Iterator[Sample]:
        """Yield the samples of ``split`` (all splits when None), optionally only
        those verified for ``model`` (a registry key)."""

    def sample(self, sample_id: str, *, split: str | None = None) -> Sample:
        """The sample whose :attr:`Sample.id` is ``sample_id``.

        This default scans :meth:`samples`; benchmarks whose ids encode how to build
        the sample (e.g. a generator seed) override it with a direct lookup.

        Args:
            sample_id (str): a stable id, as stored by a leaderboard.
            split (str | None): the split to search; None = all. Default: None.

        Returns:
            Sample: the sample with that id.

        Raises:
            DataError: no sample has that id.
        """
        for sample in self.samples(split=split):
            if sample.id == sample_id:
                return sample
        where = "any split" if split is None else f"split {split!r}"
        raise DataError(
            f"benchmark {self.name!r} has no sample with id {sample_id!r} in {where}; "
            "was the store written from another version or layout of the benchmark?"
        )

    def negatives(self, *, split: str | None = None) -> Iterator[Sample]:
        """Images *without* a finding, for recognition scores (AUC, accuracy, F1).

        Each negative is a :class:`Sample` whose ``finding`` is the finding it lacks,
        ``answer`` is ``"No"`` and ``boxes`` is empty (0, 4). Attribution runs use
        :meth:`samples` (positives) only. Default: none.

        Args:
            split (str | None): the split; None = all. Default: None.
        """
        return iter(())

    def counterfactual_provider(self) -> CounterfactualProvider | None:
        """The exact counterfactuals this benchmark makes for its samples, or None.

        ``cxr-attrib filter`` uses it when neither ``--counterfactuals`` nor
        ``--inpaint`` is given. Default: None (edits must come from elsewhere).
        """
        return None
