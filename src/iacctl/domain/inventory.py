"""The inventory (SPEC F2, seed 002 H6): which resources a workspace's state holds, read from
the state JSON, and how one sync changes the inventory. Pure.

Only the resource's identity is kept: address, module, type, name, index, provider, mode and the
`id` attribute (unless Terraform marks it sensitive). No other attribute value is read out of
the state: the state can hold secrets (X2).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resource:
    address: str
    module: str | None
    mode: str  # managed | data
    type: str
    name: str
    index: str | None  # the instance key as in the address: 0, "eu"; None without count/for_each
    provider: str | None
    resource_id: str | None

    def as_dict(self) -> dict[str, Any]:
        """As the inventory URL receives it, with the field names `inventory list --json` uses
        (issue 19 item 7: one name per field wherever it is read)."""
        return {"address": self.address, "module": self.module, "type": self.type, "name": self.name,
                "index": self.index, "provider": self.provider, "mode": self.mode, "id": self.resource_id}


def _index_text(key: Any) -> str | None:
    if key is None:
        return None
    if isinstance(key, bool):
        return json.dumps(key)
    if isinstance(key, int):
        return str(key)
    return json.dumps(key, ensure_ascii=False)


def _id_of(instance: Mapping[str, Any]) -> str | None:
    attributes = instance.get("attributes") or {}
    value = attributes.get("id")
    if value is None or isinstance(value, (dict, list)):
        return None
    for path in instance.get("sensitive_attributes") or []:
        # A path is a list of steps: [{"type": "get_attr", "value": "id"}]; older states list names.
        steps = path if isinstance(path, list) else [path]
        first = steps[0] if steps else None
        name = first.get("value") if isinstance(first, dict) else first
        if name == "id":
            return None
    return str(value)


def resources_of_state(state: Mapping[str, Any]) -> list[Resource]:
    """Every resource instance of a Terraform state (format version 4), in address order."""
    out: list[Resource] = []
    for res in state.get("resources") or []:
        module = res.get("module") or None
        mode = str(res.get("mode") or "managed")
        rtype, name = str(res.get("type") or ""), str(res.get("name") or "")
        prefix = f"{module}." if module else ""
        base = f"{prefix}{'data.' if mode == 'data' else ''}{rtype}.{name}"
        for instance in res.get("instances") or []:
            index = _index_text(instance.get("index_key"))
            address = base if index is None else f"{base}[{index}]"
            out.append(Resource(address=address, module=module, mode=mode, type=rtype, name=name, index=index,
                                provider=res.get("provider"), resource_id=_id_of(instance)))
    return sorted(out, key=lambda r: r.address)


@dataclass(frozen=True)
class Change:
    """What one sync does to the inventory."""

    added: list[Resource]  # new addresses, or addresses that had been removed and are back
    kept: list[Resource]  # still there: last seen (and id, serial) updated
    removed: list[str]  # addresses gone from the state: removed_at set


def diff(present: Iterable[str], in_state: Iterable[Resource]) -> Change:
    """`present`: the addresses the inventory holds as not removed."""
    before = set(present)
    now = {r.address: r for r in in_state}
    added = [r for a, r in sorted(now.items()) if a not in before]
    kept = [r for a, r in sorted(now.items()) if a in before]
    removed = sorted(before - set(now))
    return Change(added, kept, removed)


def newer(serial: int, last_synced: int | None) -> bool:
    """A sync applies only a state serial newer than the last one synced: a late or repeated
    sync of an older state never overwrites a newer inventory."""
    return last_synced is None or serial > last_synced
