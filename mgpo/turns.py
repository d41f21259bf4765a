"""Multi-turn decisions that depend only on the model's text."""

from __future__ import annotations

import re

from mgpo.boxes import BARE_JSON_WINDOW

# the finish reason of a multi-turn trajectory ended at a crop request without a valid box
# (rollout.invalid_crop: end): it asked to look closer and never answered
INVALID_CROP = "invalid_crop"

_IMAGE_KEY = re.compile(r'"image"\s*:\s*(-?\d{1,6})')


def crop_source(reply: str, n_views: int) -> int | None:
    """The 1-based image a multi-turn crop request cuts from ("image": N in its JSON); 1 (the original)
    when the request names none; None when it names an image that does not exist."""
    found = _IMAGE_KEY.findall(reply[-BARE_JSON_WINDOW:])
    if not found:
        return 1
    number = int(found[-1])
    return number if 1 <= number <= n_views else None
