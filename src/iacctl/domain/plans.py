"""What a plan changes (SPEC E5): change counts read from `terraform show -json`. Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ChangeCounts:
    add: int = 0
    change: int = 0
    destroy: int = 0
    replace: int = 0
    outputs: int = 0

    @property
    def any(self) -> bool:
        return any(asdict(self).values())

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.add} to add, {self.change} to change, {self.destroy} to destroy, "
            f"{self.replace} to replace, {self.outputs} output change(s)"
        )


def count_changes(plan_json: dict[str, Any]) -> ChangeCounts:
    add = change = destroy = replace = outputs = 0
    for rc in plan_json.get("resource_changes") or []:
        actions = list((rc.get("change") or {}).get("actions") or [])
        if sorted(actions) == ["create", "delete"]:
            replace += 1
        elif actions == ["create"]:
            add += 1
        elif actions == ["update"]:
            change += 1
        elif actions == ["delete"]:
            destroy += 1
    for oc in (plan_json.get("output_changes") or {}).values():
        actions = list((oc or {}).get("actions") or [])
        if actions and actions != ["no-op"]:
            outputs += 1
    return ChangeCounts(add, change, destroy, replace, outputs)
