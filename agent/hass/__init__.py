"""Home Assistant MQTT discovery: configs, re-announcement and stale-entity removal."""
