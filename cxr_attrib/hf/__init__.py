"""Public, family-free helpers for adapters of Hugging Face vision-language models.

Built-in families and third-party adapter plugins use the same pieces
(docs/adapter-guide.md):

* :mod:`cxr_attrib.hf.chat`: the chat template rendered with the prompt and the
  answer as data slots, tokenised as plain text (:func:`encode_conversation`);
* :mod:`cxr_attrib.hf.spans`: the target span of each policy and the image-token
  positions (:func:`target_token_indices`, :func:`image_token_positions`);
* :mod:`cxr_attrib.hf.passes`: the gradient path of ``forward``: graph start for
  ``grad=True`` (:func:`start_graph`), captures on the gradient path
  (:func:`capture_layers`), backward counting (:func:`count_backward`);
* :mod:`cxr_attrib.hf.loading`: one-line load errors (offline, missing or corrupt
  files) naming the registry key (:func:`load_step`, :func:`check_hub_access`),
  processing parts without torchvision (:func:`load_processing`);
* :mod:`cxr_attrib.hf.logprobs`: float32 target log-probs, vocabulary-chunked
  (:func:`token_logprobs`);
* :mod:`cxr_attrib.hf.pixels`: working-frame checks (:func:`grey_to_rgb`), the plain
  (B, 3, H, W) pixel layout (:class:`PlainPixels`);
* :class:`HFAdapter`: a chat-template ``*ForConditionalGeneration`` model behind
  every surface, split by surface (:mod:`.scorer`, :mod:`.gradient`, :mod:`.attention`).
"""

from .adapter import HFAdapter
from .chat import PlainText, encode_conversation, expand_placeholder, render_chat
from .loading import ProcessingParts, check_hub_access, load_processing, load_step, read_model_type, resolve_device_dtype
from .logprobs import token_logprobs
from .passes import capture_layers, check_indices, count_backward, start_graph
from .pixels import PlainPixels, check_working_batch, grey_to_rgb, square_side
from .scorer import TextLayout
from .spans import image_token_positions, target_char_span, target_token_indices

__all__ = [
    "HFAdapter",
    "PlainPixels",
    "PlainText",
    "ProcessingParts",
    "TextLayout",
    "capture_layers",
    "check_hub_access",
    "check_indices",
    "check_working_batch",
    "count_backward",
    "encode_conversation",
    "expand_placeholder",
    "grey_to_rgb",
    "image_token_positions",
    "load_processing",
    "load_step",
    "read_model_type",
    "render_chat",
    "resolve_device_dtype",
    "square_side",
    "start_graph",
    "target_char_span",
    "target_token_indices",
    "token_logprobs",
]
