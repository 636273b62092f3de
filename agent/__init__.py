"""edge-agent: MQTT in, int8 TFLite on the device, cloud fallback over HTTP, results out."""

__version__ = "0.1.0"
