"""A template's slots as a Slack modal or a Discord modal, and their submissions back as values.

Platform-neutral payload shapes (plain dicts as the platforms' APIs take them), so an adapter's
`reply.form(template, values)` only opens the modal and waits for its submission:

    Slack:   views.open(trigger_id, view=slack_modal(template, values, meta))
             on view_submission (callback_id "confab_template:NAME"):
                 values = slack_values(template, view["state"]["values"])
    Discord: interaction.response.send_modal(...) from discord_modal(template, values, meta)
             on the modal submit (custom_id "confab_template:NAME"):
                 values = discord_values(template, {custom_id: value, ...})

Discord modals hold at most five inputs and take text only, so slots with choices (promo's
`output`) and any slot beyond the fifth missing one belong in the slash command's options.
"""
from __future__ import annotations

import json

from engine.flows.templates import Template

CALLBACK_PREFIX = "confab_template:"
DISCORD_MAX_INPUTS = 5


def _title(template: Template) -> str:
    return f"/{template.name}"[:24]


def slack_modal(template: Template, values: dict, private_metadata: dict | None = None) -> dict:
    """A Slack modal view asking for the slots not given in `values` (the given ones prefilled)."""
    blocks = []
    for slot in template.slots:
        given = str(values.get(slot.name) or slot.default or "")
        if slot.choices:
            options = [{"text": {"type": "plain_text", "text": c}, "value": c} for c in slot.choices]
            element = {"type": "static_select", "action_id": slot.name, "options": options}
            if given in slot.choices:
                element["initial_option"] = options[slot.choices.index(given)]
        else:
            element = {"type": "plain_text_input", "action_id": slot.name, "multiline": slot.long,
                       "max_length": min(3000, slot.max_chars if not slot.long else 3000)}
            if given:
                element["initial_value"] = given
        blocks.append({"type": "input", "block_id": slot.name, "optional": slot.optional,
                       "label": {"type": "plain_text", "text": slot.label[:2000]}, "element": element})
    return {"type": "modal", "callback_id": CALLBACK_PREFIX + template.name,
            "title": {"type": "plain_text", "text": _title(template)},
            "submit": {"type": "plain_text", "text": "Make it"},
            "close": {"type": "plain_text", "text": "Cancel"},
            "private_metadata": json.dumps(private_metadata or {})[:3000],
            "blocks": blocks}


def slack_values(template: Template, state_values: dict) -> dict:
    """`view.state.values` of a submitted modal -> {slot: value}."""
    out = {}
    for slot in template.slots:
        field = (state_values.get(slot.name) or {}).get(slot.name) or {}
        if field.get("type") == "static_select" or "selected_option" in field:
            value = (field.get("selected_option") or {}).get("value")
        else:
            value = field.get("value")
        if value:
            out[slot.name] = value
    return out


def discord_modal(template: Template, values: dict, custom_id_suffix: str = "") -> dict:
    """A Discord modal (the interaction response's `data`, type 9) with text inputs for at
    most five missing text slots."""
    rows = []
    for slot in template.slots:
        if slot.choices or str(values.get(slot.name) or "").strip():
            continue
        if len(rows) == DISCORD_MAX_INPUTS:
            break
        text_input = {"type": 4, "custom_id": slot.name, "label": slot.label[:45],
                      "style": 2 if slot.long else 1, "required": not slot.optional and not slot.default,
                      "max_length": min(4000, slot.max_chars if not slot.long else 4000)}
        if slot.default:
            text_input["value"] = slot.default
        rows.append({"type": 1, "components": [text_input]})
    return {"custom_id": (CALLBACK_PREFIX + template.name + custom_id_suffix)[:100],
            "title": _title(template)[:45], "components": rows}


def discord_values(template: Template, submitted: dict) -> dict:
    """{custom_id: value} of a submitted Discord modal -> {slot: value}."""
    names = {s.name for s in template.slots}
    return {k: v for k, v in submitted.items() if k in names and str(v).strip()}
