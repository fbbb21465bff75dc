"""Issue 24 item 1, pure: the review as GitHub-flavoured Markdown, read back by a real Markdown
parser (tables, <details>, code fences) the way GitHub renders it, for each kind of plan a
reviewer meets: creates, updates, destroys, replacements, moves, no changes, a failed plan, a
failed run task, and one too long for a comment."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from typing import Any

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from iacctl.cli.markdown import COMMENT_LIMIT, code, marker, review_markdown
from iacctl.domain.plans import ChangeCounts, ResourceChange, gitlab_report
from iacctl.domain.review import Review, RunTaskOutcome, destroys_first, plan_text

HASH = "1f635668bc4af15feb31861d8cc47069a8335a2505aac1a4ba8c7b82dfc417fd"

PLAN_TEXT = (
    "Terraform used the selected providers to generate the following execution",
    "plan. Resource actions are indicated with the following symbols:",
    "  + create",
    "",
    "  # terraform_data.new will be created",
    '  + resource "terraform_data" "new" {',
    "      + id = (known after apply)",
    "    }",
    "",
    "Plan: 1 to add, 1 to change, 2 to destroy.",
)


def review(**overrides: Any) -> Review:
    base = Review(
        task=12, workspace="network", kind="plan_and_apply", status="apply_pending", stage=None, error=None,
        plan_hash=HASH, planned_at="2026-12-05T10:00:00Z", created_by="alice via GitHub Actions (runner@ci)",
        message="pull request #7", confirmed_by=None, cancelled_by=None,
        counts=ChangeCounts(add=1, change=1, destroy=1, replace=1),
        moves=1,
        changes=(
            ResourceChange("terraform_data.new", "create"),
            ResourceChange("terraform_data.app", "update", ('input: "app-small" -> "app-large"',)),
            ResourceChange("terraform_data.db", "replace", ('triggers_replace: ["small"] -> ["large"] '
                                                            "(forces replacement)",)),
            ResourceChange('terraform_data.old["a|b"]', "delete"),
            ResourceChange("terraform_data.renamed", "move", (), moved_from="terraform_data.before"),
        ),
        drift=(), run_tasks=(), plan_text=PLAN_TEXT,
    )
    return replace(base, **overrides)


def parse(text: str) -> list[Token]:
    # GitHub's renderer: CommonMark with HTML blocks, plus the GFM table extension.
    return MarkdownIt("commonmark").enable("table").parse(text)


def shown(text: str) -> str:
    """What a reader sees: the rendered HTML's text."""
    return html.unescape(re.sub(r"<[^>]+>", "", MarkdownIt("commonmark").enable("table").render(text)))


def tables(tokens: list[Token]) -> list[list[list[str]]]:
    """Every table as rows of cell texts (inline content as GitHub shows it, code spans' text)."""
    out: list[list[list[str]]] = []
    row: list[str] = []
    for i, tok in enumerate(tokens):
        if tok.type == "table_open":
            out.append([])
        elif tok.type == "tr_open":
            row = []
        elif tok.type in ("th_open", "td_open"):
            inline = tokens[i + 1]
            # A <br> between two values of a cell reads as a line break.
            breaks = {"softbreak": " ", "html_inline": "\n"}
            row.append("".join(breaks.get(child.type, child.content) for child in (inline.children or []))
                       if inline.type == "inline" else "")
        elif tok.type == "tr_close":
            out[-1].append(row)
    return out


def fences(tokens: list[Token]) -> list[str]:
    return [t.content for t in tokens if t.type == "fence"]


def html_blocks(tokens: list[Token]) -> list[str]:
    return [t.content.strip() for t in tokens if t.type == "html_block"]


def test_a_plan_with_every_kind_of_change_reads_as_a_table_destroys_first() -> None:
    text = review_markdown(review())
    tokens = parse(text)
    assert text.splitlines()[0] == marker("network") == "<!-- iacctl workspace=network -->"
    [table] = tables(tokens)
    assert table[0] == ["Change", "Address", "What changes"]
    # Destroys, then replacements, then the rest in Terraform's order; the whole address, a pipe
    # in it kept inside its cell.
    assert [(r[0], r[1]) for r in table[1:]] == [
        ("⚠️ destroy", 'terraform_data.old["a|b"]'), ("⚠️ replace", "terraform_data.db"),
        ("create", "terraform_data.new"), ("update in place", "terraform_data.app"),
        ("move", "terraform_data.renamed")]
    assert table[2][2] == 'triggers_replace: ["small"] -> ["large"] (forces replacement)'
    assert table[5][2] == "moved from terraform_data.before"
    assert "1 to add, 1 to change, 1 to destroy, 1 to replace, 1 to move" in text
    assert "Terraform counts each replacement as one add and one destroy: Plan: 2 to add" in text
    # Who planned it and why, the hash, and the exact commands, each in the rendered document.
    assert "Planned by alice via GitHub Actions (runner@ci): “pull request #7”" in shown(text)
    commands = [f for f in fences(tokens) if "confirm-apply" in f]
    assert commands == [f"iacctl confirm-apply 12 --plan-hash {HASH}\niacctl cancel 12\n"]
    # Terraform's own text, folded: a <details> block around a fence that holds it whole.
    assert "<details><summary>Terraform's plan output</summary>" in html_blocks(tokens)
    assert "</details>" in html_blocks(tokens)
    assert "\n".join(PLAN_TEXT) + "\n" in fences(tokens)


def test_no_changes_says_so_and_offers_no_apply() -> None:
    quiet = review(status="planned_and_finished", counts=ChangeCounts(), moves=0, changes=(),
                   plan_text=("No changes. Your infrastructure matches the configuration.",))
    text = review_markdown(quiet)
    tokens = parse(text)
    assert tables(tokens) == []
    assert "**No changes.**" in text
    assert not any("confirm-apply" in f for f in fences(tokens))


def test_a_failed_plan_says_what_failed_and_shows_terraforms_words() -> None:
    failed = review(status="failed", stage="planning", plan_hash=None, counts=None, changes=(),
                    error="terraform plan failed (exit 1): Error: Invalid reference <here>",
                    plan_text=("Error: Invalid reference", "", '  on main.tf line 3: `x | y`'))
    text = review_markdown(failed)
    tokens = parse(text)
    heading = next(tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open")
    assert heading == "iacctl: workspace `network`, task 12: failed at stage planning"
    assert "No plan was saved" in text
    assert not any("confirm-apply" in f for f in fences(tokens))
    # The error is text, never HTML a browser would read.
    assert "&lt;here&gt;" in text and "<here>" not in text
    assert "Error terraform plan failed (exit 1): Error: Invalid reference <here>" in shown(text)
    assert "Error: Invalid reference\n\n  on main.tf line 3: `x | y`\n" in fences(tokens)


def test_a_failed_run_task_is_marked() -> None:
    checked = review(run_tasks=(
        RunTaskOutcome("cost", "post_plan", "passed", "advisory", "cost (post_plan, advisory): passed: +$3/month"),
        RunTaskOutcome("policy", "post_plan", "failed", "mandatory",
                       "policy (post_plan, mandatory): failed: 2 violations"),
    ))
    text = shown(review_markdown(checked))
    assert "✅ cost (post_plan, advisory): passed: +$3/month" in text
    assert "❌ policy (post_plan, mandatory): failed: 2 violations" in text


def test_a_review_too_long_for_a_comment_is_cut_at_a_line_and_says_so() -> None:
    long_text = tuple(f"  + resource line {i:05d} " + "x" * 80 for i in range(2000))
    text = review_markdown(review(plan_text=long_text))
    assert len(text) <= COMMENT_LIMIT
    tokens = parse(text)
    [folded] = [f for f in fences(tokens) if "resource line" in f]
    kept = folded.splitlines()
    assert kept == list(long_text[:len(kept)])  # whole lines, from the first
    assert f"{2000 - len(kept)} more line(s) of Terraform's output left out" in text
    assert "iacctl tasks logs 12" in text
    assert "</details>" in html_blocks(tokens)  # the fold is closed: nothing after it swallowed
    assert len(tables(tokens)[0]) == 6  # the table whole

    # A table longer than the limit: its first rows (the destroys) stay, the rest is counted.
    many = tuple(ResourceChange(f"terraform_data.r{i:05d}", "create", (f'input: "{"v" * 60}"',))
                 for i in range(2000))
    text = review_markdown(review(changes=(ResourceChange("terraform_data.gone", "delete"), *many)))
    assert len(text) <= COMMENT_LIMIT
    [table] = tables(parse(text))
    assert table[1][:2] == ["⚠️ destroy", "terraform_data.gone"]
    shown = len(table) - 1
    assert f"and {2001 - shown} more change(s) not shown here" in text
    assert "iacctl tasks plan 12" in text


@pytest.mark.parametrize("value", ["plain", "a`b", "``x``", "`", "a|b", " a ", "x "])
def test_code_spans_hold_any_value_whole(value: str) -> None:
    [table] = tables(parse(f"| v |\n| --- |\n| {code(value)} |\n"))
    assert table[1] == [value]


def test_the_gitlab_report_counts_as_gitlabs_own_template() -> None:
    plan = {"resource_changes": [
        {"change": {"actions": ["create"]}}, {"change": {"actions": ["update"]}},
        {"change": {"actions": ["delete", "create"]}}, {"change": {"actions": ["delete"]}},
        {"change": {"actions": ["no-op"]}}, {"change": {"actions": ["read"]}},
    ]}
    assert gitlab_report(plan) == {"create": 2, "update": 1, "delete": 2}
    assert gitlab_report({}) == {"create": 0, "update": 0, "delete": 0}


def test_destroys_come_first_and_refresh_chatter_is_left_out() -> None:
    changes = [ResourceChange("a", "create"), ResourceChange("b", "replace"), ResourceChange("c", "delete")]
    assert [c.address for c in destroys_first(changes)] == ["c", "b", "a"]
    assert plan_text(["", "iacctl: plan saved", "terraform_data.a: Refreshing state... [id=1]",
                      "data.x.y: Reading...", "data.x.y: Read complete after 0s [id=2]", "",
                      "No changes.", ""]) == ("No changes.",)
