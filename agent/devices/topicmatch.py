"""MQTT topic filter matching for device topics (`+` levels only; `#` is not allowed)."""

from __future__ import annotations


def matches(topic_filter: str, topic: str) -> bool:
    """True when `topic` matches `topic_filter` (levels equal, or `+`)."""
    want = topic_filter.split("/")
    got = topic.split("/")
    return len(want) == len(got) and all(w in ("+", g) for w, g in zip(want, got, strict=True))


def overlaps_tree(topic_filter: str, root: str) -> bool:
    """True when `topic_filter` could match a topic under `root` (or `root` itself)."""
    want = topic_filter.split("/")
    levels = root.split("/")
    if len(want) < len(levels):
        return False
    return all(w in ("+", r) for w, r in zip(want, levels, strict=False))
