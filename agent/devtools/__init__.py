"""Helpers that run real components on one machine: a private mosquitto, the cloud service,
the agent as a subprocess, and a request client. Used by the demo, the benchmark and tests."""
