"""Training and evaluation helpers for the edge-agent model zoo.

Only ``features``, ``runtime`` and ``cascade`` are imported by
``verify_runtime.py``; they depend on numpy (and ai-edge-litert for
``runtime``) and must never import TensorFlow.
"""
