"""Third-party messages that concern no user of this app, each silenced by its own text (nothing else is hidden).

`quiet_third_party()` is called by the entry points (app.py, `python -m editor`) before they import the model code,
whose import prints the first one:
- transformers: "`CLIPImageProcessor` requires torchvision (not installed); falling back to ...Pil": the PIL
  processors are what this project uses; torchvision is not one of its requirements (requirements.txt).
- transformers: "`past_key_values` is deprecated ... for `LlamaModel.forward`", a FutureWarning on every Think from
  the MLLM's cached decoding (editor/models/llava.py), which works as written for the pinned transformers range.
"""

from __future__ import annotations

import logging
import warnings

TORCHVISION_NOTICE = "requires torchvision (not installed)"
PAST_KEY_VALUES = r"`past_key_values` is deprecated"


class DropMessage(logging.Filter):
    """Drops the records whose message contains `text`."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_third_party() -> None:
    """Installs the filters (idempotent)."""
    logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, DropMessage) and f.text == TORCHVISION_NOTICE for f in logger.filters):
        logger.addFilter(DropMessage(TORCHVISION_NOTICE))
    warnings.filterwarnings("ignore", message=PAST_KEY_VALUES, category=FutureWarning)
