"""A worked black-box adapter: a Scorer, complete for MedFocus, occlusion, RISE and the priors.

The "model" is a toy: it says "Yes" when the upper-left quarter of the working image is
bright. Its target log-prob is log sigmoid(8 * (mean brightness of that quarter - 0.5)),
so hiding that quarter is what changes the answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cxr_attrib import hookimpl
from cxr_attrib.adapter import Encoding, Generation, LoadOptions, ModelCard, Query, Scorer
from cxr_attrib.hf import grey_to_rgb
from cxr_attrib.typing import WorkingImage


class ToyAdapter(Scorer):
    """Answers "Yes" when the upper-left quarter of the working image is bright."""

    family = "toy"

    @classmethod
    def load(cls, source: str, options: LoadOptions, *, name: str | None = None) -> ToyAdapter:
        """``ModelCard.load``: the core passes the registry key as ``name``."""
        return cls(name or source, options)

    def _logit(self, images: Sequence[WorkingImage]) -> torch.Tensor:
        rgb = grey_to_rgb(images, self.working_size)  # refuses images outside the working frame
        half = self.working_size // 2
        brightness = torch.tensor([float(image[:half, :half, 0].mean()) for image in rgb])
        return 8.0 * (brightness - 0.5)  # (B,)

    def encode(self, images: Sequence[WorkingImage], query: Query) -> Encoding:
        """One target token (the verdict), no image tokens: a black box has no inputs to show."""
        grey_to_rgb(images, self.working_size)
        return Encoding(
            inputs={}, image_positions=torch.zeros(0, dtype=torch.long), grid=(1, 1),
            target_positions=torch.tensor([1]), target_ids=torch.tensor([1]), target_tokens=("Yes",),
            batch_size=len(images),
        )

    def score(self, images: Sequence[WorkingImage], query: Query, *, batch_size: int | None = None) -> torch.Tensor:
        """(B, 1) float32 log-prob of "Yes" (or of "No" when that is the answer), one counted call."""
        if not len(images):
            raise ValueError("score() needs at least one image; got an empty sequence.")
        logit = self._logit(images)
        says_no = query.answer.strip().lower().startswith("no")
        self.counter.forward_calls += 1
        self.counter.forward_sequences += len(images)
        return torch.nn.functional.logsigmoid(-logit if says_no else logit)[:, None].float()

    def generate(self, image: WorkingImage, prompt: str, *, max_new_tokens: int = 256) -> Generation:
        """Greedy: "Yes" when the quarter is bright."""
        logit = float(self._logit([image])[0])
        self.counter.generate_calls += 1
        text = "Yes" if logit > 0 else "No"
        return Generation(text, (1,), (float(np.log(1 / (1 + np.exp(-abs(logit))))),))


@hookimpl
def register_adapters(register):
    register(ModelCard("toy_quarter", "toy", "toy", "Toy: bright upper-left quarter means yes", load=ToyAdapter.load))
