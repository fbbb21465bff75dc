"""What a plan changes (SPEC E5): change counts read from `terraform show -json`. Pure."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from iacctl.domain.masking import mask_text, maskable


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


def count_moves(plan_json: dict[str, Any]) -> int:
    """Issue 19 item 7: resources the plan moves to a new address (moved blocks), whatever else
    it does to them. A plan of moves only has changes, but none that the counts above show."""
    return sum(1 for rc in plan_json.get("resource_changes") or []
               if rc.get("previous_address") and rc.get("previous_address") != rc.get("address"))


# -- review (issue 9): what a plan changes, resource by resource ---------------------------------

SENSITIVE = "(sensitive value)"
UNKNOWN = "(known after apply)"
_VALUE_WIDTH = 40


def terraform_plan_line(counts: ChangeCounts) -> str:
    """Terraform's own `Plan:` line for these counts: it counts a replacement as one add and
    one destroy, where iacctl counts it once, as a replacement."""
    return (f"Plan: {counts.add + counts.replace} to add, {counts.change} to change, "
            f"{counts.destroy + counts.replace} to destroy.")


def relation_to_terraform(counts: ChangeCounts) -> str | None:
    """How iacctl's counts relate to Terraform's `Plan:` line, when they read differently."""
    if not counts.replace:
        return None
    return (f"Terraform counts each replacement as one add and one destroy: {terraform_plan_line(counts)}")


@dataclass(frozen=True)
class ResourceChange:
    address: str
    action: str  # create | update | delete | replace | read | forget | move (a move and nothing else)
    changes: tuple[str, ...] = ()  # "name: before -> after" of updated or replaced attributes
    moved_from: str | None = None  # issue 19 item 7: the address a moved block moves it from


def _action(actions: list[str]) -> str | None:
    if sorted(actions) == ["create", "delete"]:
        return "replace"
    if actions in (["create"], ["update"], ["delete"], ["read"], ["forget"]):
        return actions[0]
    return None  # no-op


def _marked(marker: Any) -> bool:
    """A sensitivity marker says something below it is sensitive."""
    if marker is True:
        return True
    if isinstance(marker, dict):
        return any(_marked(v) for v in marker.values())
    if isinstance(marker, list):
        return any(_marked(v) for v in marker)
    return False


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 3] + "..."


def _attribute_changes(change: dict[str, Any], replace_paths: list[Any], secrets: Iterable[str]) -> tuple[str, ...]:
    def part(key: str) -> dict[str, Any]:
        value = change.get(key)
        return value if isinstance(value, dict) else {}

    before, after, unknown = part("before"), part("after"), part("after_unknown")
    before_s, after_s = part("before_sensitive"), part("after_sensitive")
    forcing = {str(p[0]) for p in replace_paths if isinstance(p, list) and p}
    out = []
    for name in sorted(set(before) | set(after) | set(unknown)):
        is_unknown = _marked(unknown.get(name))
        if not is_unknown and before.get(name) == after.get(name):
            continue
        # Compared as planned, shown masked (X2): a masked value equals any other masked one, which
        # would hide a changed sensitive attribute; masked before it is shortened, so no part of a
        # long secret shows.
        old = SENSITIVE if _marked(before_s.get(name)) else _short(masked(before.get(name), secrets))
        new = UNKNOWN if is_unknown else (SENSITIVE if _marked(after_s.get(name))
                                          else _short(masked(after.get(name), secrets)))
        if old == new == SENSITIVE:
            text = f"{name}: {SENSITIVE} changed"
        else:
            text = f"{name}: {old} -> {new}"
        out.append(text + (" (forces replacement)" if name in forcing else ""))
    return tuple(out)


def resource_changes(plan_json: dict[str, Any], secrets: Iterable[str] = ()) -> list[ResourceChange]:
    """Every resource the plan acts on, in Terraform's order, no-ops left out; read from the plan
    as Terraform gave it, with what it marks sensitive and the `secrets` masked (X2)."""
    secrets = list(secrets)
    out = []
    for rc in plan_json.get("resource_changes") or []:
        change = rc.get("change") or {}
        previous = rc.get("previous_address")
        moved_from = str(previous) if previous and previous != rc.get("address") else None
        action = _action(list(change.get("actions") or []))
        if action is None:
            if moved_from is None:
                continue
            action = "move"  # issue 24: a move is a change the reviewer sees, as in count_moves
        attrs: tuple[str, ...] = ()
        if action in ("update", "replace"):
            attrs = _attribute_changes(change, list(rc.get("replace_paths") or change.get("replace_paths") or []),
                                       secrets)
        out.append(ResourceChange(str(rc.get("address", "?")), action, attrs, moved_from))
    return out


def counts_sentence(counts: ChangeCounts, *, moves: int = 0, reads: int = 0) -> str:
    """The review's one sentence of counts (issue 9, issue 24), the same in the terminal and in
    Markdown: adds, changes, destroys and replacements, then reads, moves and output changes
    when there are any."""
    line = (f"{counts.add} to add, {counts.change} to change, {counts.destroy} to destroy, "
            f"{counts.replace} to replace")
    if reads:
        line += f", {reads} to read"
    if moves:
        line += f", {moves} to move"
    if counts.outputs:
        line += f"; {counts.outputs} output change(s)"
    return line


def gitlab_report(plan_json: dict[str, Any]) -> dict[str, int]:
    """Issue 24 item 3: GitLab's Terraform report (`artifacts: reports: terraform`) counted as
    GitLab's own template counts it from `terraform show -json`: every "create", "update" and
    "delete" among the actions of all resource changes, so a replacement counts once in create
    and once in delete, as in Terraform's Plan line."""
    actions = [a for rc in plan_json.get("resource_changes") or []
               for a in ((rc.get("change") or {}).get("actions") or [])]
    return {kind: actions.count(kind) for kind in ("create", "update", "delete")}


def resource_drift(plan_json: dict[str, Any], secrets: Iterable[str] = ()) -> list[ResourceChange]:
    """F5: what the plan's refresh found changed outside Terraform (`resource_drift`): each
    object updated (with its attribute changes, sensitive values masked) or deleted."""
    out = []
    for rc in plan_json.get("resource_drift") or []:
        change = rc.get("change") or {}
        action = _action(list(change.get("actions") or []))
        if action is None:
            continue
        attrs = _attribute_changes(change, [], list(secrets)) if action == "update" else ()
        out.append(ResourceChange(str(rc.get("address", "?")), action, attrs))
    return out


def _mask(value: Any, marker: Any) -> Any:
    if marker is True:
        return SENSITIVE
    if isinstance(value, dict) and isinstance(marker, dict):
        return {k: _mask(v, marker.get(k)) for k, v in value.items()}
    if isinstance(value, list) and isinstance(marker, list):
        return [_mask(v, marker[i] if i < len(marker) else None) for i, v in enumerate(value)]
    return value


def _mask_module(module: dict[str, Any]) -> None:
    for resource in module.get("resources") or []:
        if "values" in resource:
            resource["values"] = _mask(resource["values"], resource.get("sensitive_values"))
    for child in module.get("child_modules") or []:
        _mask_module(child)


def _mask_strings(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return mask_text(value, secrets, SENSITIVE)
    if isinstance(value, dict):
        return {k: _mask_strings(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_strings(v, secrets) for v in value]
    return value


def redact_plan(plan_json: dict[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """The plan JSON as `terraform show -json` gives it, with every value Terraform marks
    sensitive, every sensitive variable and every value in `secrets` (X2: what the workspace's
    sensitive variables hold or ever held) masked."""
    doc: dict[str, Any] = copy.deepcopy(plan_json)
    # F5: a refresh's drifted values (resource_drift) are masked as the planned changes are.
    for rc in [*(doc.get("resource_changes") or []), *(doc.get("resource_drift") or [])]:
        change = rc.get("change") or {}
        for side in ("before", "after"):
            if side in change:
                change[side] = _mask(change[side], change.get(f"{side}_sensitive"))
    for oc in (doc.get("output_changes") or {}).values():
        for side in ("before", "after"):
            if isinstance(oc, dict) and side in oc:
                oc[side] = _mask(oc[side], oc.get(f"{side}_sensitive"))
    for key in ("planned_values", "prior_state"):
        values = doc.get(key)
        if isinstance(values, dict):
            values = values.get("values", values)  # prior_state nests them under "values"
            for output in (values.get("outputs") or {}).values():
                if isinstance(output, dict) and output.get("sensitive"):
                    output["value"] = SENSITIVE
            if isinstance(values.get("root_module"), dict):
                _mask_module(values["root_module"])
    declared = ((doc.get("configuration") or {}).get("root_module") or {}).get("variables") or {}
    for name, variable in (doc.get("variables") or {}).items():
        if isinstance(variable, dict) and (declared.get(name) or {}).get("sensitive"):
            variable["value"] = SENSITIVE
    out: dict[str, Any] = masked(doc, secrets)
    return out


def masked(value: Any, secrets: Iterable[str]) -> Any:
    """Every string in `value` (a text, or lists and dicts of them) with each sensitive value
    masked (X2), by the rule of domain.masking (the longest first, none shorter than 3)."""
    hidden = maskable(secrets)
    return _mask_strings(value, hidden) if hidden else value
