"""The project's own exception family. Third-party errors are translated into these
at the one module that imports each library (paho, the TFLite runtime, httpx)."""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base class of every error edge-agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """The configuration is invalid. `problems` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


class ModelLoadError(EdgeAgentError):
    """A model file is missing, corrupt, fails its hash check or cannot be loaded."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot load model {path}: {reason}")
        self.path = path
        self.reason = reason


class ModelRuntimeError(EdgeAgentError):
    """The interpreter failed while running a model."""


class MqttError(EdgeAgentError):
    """A failure talking to the MQTT broker."""


class MqttAuthError(MqttError):
    """The broker refused the connection (bad credentials, not authorised): fatal, no retry."""


class CloudError(EdgeAgentError):
    """The cloud model service failed, timed out, or its circuit breaker is open."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class InputError(EdgeAgentError):
    """A message from the network is invalid. `code` is the error code on the wire."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
