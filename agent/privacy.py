"""What may leave the device for the cloud: one policy per camera (and one for images sent
on the request API), checked where data leaves (`agent/cloud/client.py`).

Every cloud payload is tagged with what it carries:

- `features`: numbers that are not derived from a camera or a request image (digits' 8x8
  grid, sensor features): not governed by an image policy;
- `derived`: numbers computed from an image by the edge model (keypoints, labels, scores);
- `frames`: pixels (the image, or the model's input tensor made from it).

Policies, from strictest: `never` (nothing derived from the image leaves), `derived`
(keypoints or labels only), `frames` (pixels too).
"""

from __future__ import annotations

from typing import Literal

Privacy = Literal["never", "derived", "frames"]
DataKind = Literal["features", "derived", "frames"]

_RANK = {"never": 0, "derived": 1, "frames": 2}


def allows(policy: Privacy | None, kind: DataKind) -> bool:
    """True when data of `kind` may be sent to the cloud under `policy` (None: no image
    policy applies, e.g. a task whose input is not an image)."""
    if kind == "features":
        return policy is None or policy != "never"
    if policy is None:
        return False  # image-derived data always needs an explicit policy
    return _RANK[policy] >= _RANK[kind]
