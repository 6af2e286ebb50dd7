"""What Home Assistant documents for an MQTT discovery payload, per component: a checker for tests.

The keys below are copied, by hand, from Home Assistant's documentation (the
`{% configuration %}` tables of each page; the abbreviations from the MQTT
integration page), read from the home-assistant.io repository:
- discovery topic, payload and abbreviations: https://www.home-assistant.io/integrations/mqtt/
  (source/_integrations/mqtt.markdown: "Supported abbreviations", "Supported
  abbreviations for device registry configuration")
- light, JSON schema: https://www.home-assistant.io/integrations/light.mqtt/#json-schema
- button: https://www.home-assistant.io/integrations/button.mqtt/
- switch: https://www.home-assistant.io/integrations/switch.mqtt/
- select: https://www.home-assistant.io/integrations/select.mqtt/
- sensor: https://www.home-assistant.io/integrations/sensor.mqtt/
  (and https://developers.home-assistant.io/docs/core/entity/sensor for state classes)

`platform` is left out on purpose: those pages allow it only in a device-based
discovery message (several components in one payload), which pidaemon does
not send.  Home Assistant itself ignores unknown keys; these tests do not, so
that a misspelt key (which Home Assistant would silently drop) fails.
"""

from __future__ import annotations

import re
from typing import Any

# Every MQTT entity's keys (availability, device, naming, attributes), on each page above.
COMMON = {
    "availability", "availability_mode", "availability_template", "availability_topic", "device",
    "enabled_by_default", "encoding", "entity_category", "entity_picture", "icon", "json_attributes_template",
    "json_attributes_topic", "name", "object_id", "payload_available", "payload_not_available", "qos", "unique_id",
}

COMPONENTS: dict[str, dict[str, set[str]]] = {
    # light.mqtt, "JSON schema - Configuration"
    "light": {
        "required": {"command_topic"},
        "optional": COMMON | {"brightness", "brightness_scale", "effect", "effect_list", "flash_time_long",
                              "flash_time_short", "max_mireds", "min_mireds", "optimistic", "retain", "schema",
                              "state_topic", "supported_color_modes", "white_scale"},
    },
    # button.mqtt
    "button": {
        "required": {"command_topic"},
        "optional": COMMON | {"command_template", "device_class", "payload_press", "retain"},
    },
    # switch.mqtt
    "switch": {
        "required": {"command_topic"},
        "optional": COMMON | {"command_template", "device_class", "optimistic", "payload_off", "payload_on",
                              "retain", "state_off", "state_on", "state_topic", "value_template"},
    },
    # select.mqtt
    "select": {
        "required": {"command_topic", "options"},
        "optional": COMMON | {"command_template", "optimistic", "retain", "state_topic", "value_template"},
    },
    # sensor.mqtt
    "sensor": {
        "required": {"state_topic"},
        "optional": COMMON | {"device_class", "expire_after", "force_update", "last_reset_value_template",
                              "options", "suggested_display_precision", "state_class", "unit_of_measurement",
                              "value_template"},
    },
}

# The `device` block (the same table on each page).
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "model_id",
               "name", "serial_number", "suggested_area", "sw_version", "via_device"}
AVAILABILITY_ITEM_KEYS = {"topic", "payload_available", "payload_not_available", "value_template"}

# mqtt.markdown, "Supported abbreviations" (those of the keys above).
ABBREVIATIONS = {
    "avty": "availability", "avty_mode": "availability_mode", "avty_t": "availability_topic",
    "avty_tpl": "availability_template", "bri_scl": "brightness_scale", "cmd_t": "command_topic",
    "cmd_tpl": "command_template", "dev": "device", "dev_cla": "device_class", "e": "encoding",
    "ent_cat": "entity_category", "ent_pic": "entity_picture", "exp_aft": "expire_after",
    "flsh_tlng": "flash_time_long", "flsh_tsht": "flash_time_short", "frc_upd": "force_update",
    "fx_list": "effect_list", "ic": "icon", "json_attr_t": "json_attributes_topic",
    "json_attr_tpl": "json_attributes_template", "max_mirs": "max_mireds", "min_mirs": "min_mireds",
    "name": "name", "obj_id": "object_id", "opt": "optimistic", "ops": "options", "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available", "pl_off": "payload_off", "pl_on": "payload_on",
    "pl_prs": "payload_press", "ret": "retain", "stat_cla": "state_class", "stat_off": "state_off",
    "stat_on": "state_on", "stat_t": "state_topic", "sup_clrm": "supported_color_modes", "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template", "en": "enabled_by_default",
}
# mqtt.markdown, "Supported abbreviations for device registry configuration".
DEVICE_ABBREVIATIONS = {"cu": "configuration_url", "cns": "connections", "ids": "identifiers", "name": "name",
                        "mf": "manufacturer", "mdl": "model", "hw": "hw_version", "sw": "sw_version",
                        "sa": "suggested_area"}

ENTITY_CATEGORIES = {"config", "diagnostic"}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
COLOR_MODES = {"onoff", "brightness", "color_temp", "hs", "xy", "rgb", "rgbw", "rgbww", "white"}
DISCOVERY_TOPIC = re.compile(r"(?P<prefix>.+)/(?P<component>[a-z_]+)/(?P<node>[a-zA-Z0-9_-]+)/"
                             r"(?P<object>[a-zA-Z0-9_-]+)/config")


def expanded(payload: dict[str, Any], abbreviations: dict[str, str], problems: list[str], where: str) -> dict:
    full: dict[str, Any] = {}
    for key, value in payload.items():
        name = abbreviations.get(key, key)
        if name in full:
            problems.append(f"{where}: {name} given twice ({key})")
        full[name] = value
    return full


def discovery_problems(topic: str, payload: Any) -> list[str]:
    """Everything in a discovery message that Home Assistant's documentation does not allow."""
    problems: list[str] = []
    match = DISCOVERY_TOPIC.fullmatch(topic)
    if not match:
        return [f"{topic}: not <discovery_prefix>/<component>/<node_id>/<object_id>/config"]
    component = match["component"]
    if component not in COMPONENTS:
        return [f"{topic}: component {component} has no table here"]
    if not isinstance(payload, dict):
        return [f"{topic}: the payload is not a JSON object"]
    config = expanded(payload, ABBREVIATIONS, problems, topic)
    allowed = COMPONENTS[component]["required"] | COMPONENTS[component]["optional"]
    problems += [f"{topic}: unknown key {key}" for key in sorted(set(config) - allowed)]
    problems += [f"{topic}: missing required {key}" for key in sorted(COMPONENTS[component]["required"] - set(config))]
    if "availability_topic" in config and "availability" in config:
        problems.append(f"{topic}: availability and availability_topic together")
    for item in config.get("availability", []):
        problems += [f"{topic}: availability has unknown key {k}" for k in sorted(set(item) - AVAILABILITY_ITEM_KEYS)]
    if "device" in config:
        device = expanded(config["device"], DEVICE_ABBREVIATIONS, problems, f"{topic} device")
        problems += [f"{topic}: device has unknown key {k}" for k in sorted(set(device) - DEVICE_KEYS)]
        if not device.get("identifiers") and not device.get("connections"):
            problems.append(f"{topic}: device needs identifiers or connections")
        if "unique_id" not in config:
            problems.append(f"{topic}: a device block only works with a unique_id")
    if config.get("entity_category") not in (None, *ENTITY_CATEGORIES):
        problems.append(f"{topic}: entity_category {config['entity_category']!r}")
    if component == "sensor" and config.get("entity_category") not in (None, "diagnostic"):
        problems.append(f"{topic}: a sensor's entity_category must be diagnostic")
    if config.get("state_class") not in (None, *STATE_CLASSES):
        problems.append(f"{topic}: state_class {config['state_class']!r}")
    if component == "light":
        if config.get("schema") != "json":
            problems.append(f"{topic}: schema must be json for these keys")
        modes = set(config.get("supported_color_modes", []))
        if modes - COLOR_MODES:
            problems.append(f"{topic}: unknown colour modes {sorted(modes - COLOR_MODES)}")
        if config.get("effect") and not config.get("effect_list"):
            problems.append(f"{topic}: effect without effect_list")
    if component == "select" and not all(isinstance(o, str) for o in config.get("options", [])):
        problems.append(f"{topic}: options must be strings")
    return problems
