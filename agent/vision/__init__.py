"""Cameras: frame sources, motion gating, pose/person/classify post-processing, events,
Home Assistant discovery and the camera benchmark. See docs/cameras.md."""
