"""Devices: sensor payloads in the conventions of Zigbee2MQTT, Tasmota, Shelly, ESPHome and
more (profiles under devices/profiles/), windowed per device and run through the tasks."""
