"""The review's second face (issue 24): GitHub-flavoured Markdown for a pull request comment or a
CI job's summary. The same `Review` the terminal's table shows, so the two never disagree.

Atlantis comments every plan on the pull request, folded, with the command that applies it;
the shape here follows that: a marker a script can find, the counts, every change with
destroys first, the checks, Terraform's own text folded, and the commands."""

from __future__ import annotations

from collections.abc import Iterable

from iacctl.domain.plans import counts_sentence, relation_to_terraform
from iacctl.domain.review import Review, destroys_first, is_destructive

# GitHub refuses a comment body longer than this (characters).
COMMENT_LIMIT = 65_536

_ACTION_WORDS = {
    "create": "create", "update": "update in place", "delete": "**destroy**", "replace": "**replace**",
    "read": "read", "forget": "forget (left out of the state)", "move": "move",
}
_STATUS_WORDS = {
    "apply_pending": "waits for confirmation", "planned_and_finished": "planned (speculative, never applied)",
    "applied": "applied", "failed": "failed", "cancelled": "cancelled", "running": "running",
    "pending": "waiting for its turn", "applied_state_error": "applied, but its state was not stored",
}


def marker(workspace: str) -> str:
    """Issue 24: the hidden line a script finds its earlier comment by, to update it."""
    return f"<!-- iacctl workspace={workspace} -->"


def code(text: str) -> str:
    """`text` as an inline code span whatever backticks it holds (CommonMark: a fence longer
    than any run inside), with table pipes escaped (GFM reads `|` as a cell end even there)."""
    text = text.replace("\n", " ").replace("|", "\\|")
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    # CommonMark takes one space off each end when both have one (unless it is all spaces): a
    # value that begins or ends with a backtick or a space gets one more on each side.
    ends = (text[:1], text[-1:])
    pad = " " if text.strip() and ("`" in ends or ends == (" ", " ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _plain(text: str) -> str:
    """Free text in a table cell or a line: nothing in it read as Markdown or HTML."""
    out = []
    for ch in text.replace("\n", " "):
        if ch in "\\`*_[]<>|~&":
            out.append("\\" + ch if ch not in "<>&" else {"<": "&lt;", ">": "&gt;", "&": "&amp;"}[ch])
        else:
            out.append(ch)
    return "".join(out)


def _fence(lines: Iterable[str]) -> str:
    """A fenced code block longer than any backtick fence inside it."""
    body = list(lines)
    longest = max((len(line) - len(line.lstrip("`")) for line in body), default=0)
    fence = "`" * max(3, longest + 1)
    return "\n".join([fence, *body, fence])


def _head(review: Review) -> list[str]:
    status = _STATUS_WORDS.get(review.status, review.status)
    if review.status in ("failed", "cancelled") and review.stage:
        status += f" at stage {review.stage}"
    out = [marker(review.workspace),
           f"### iacctl: workspace {code(review.workspace)}, task {review.task}: {_plain(status)}", ""]
    facts = []
    if review.created_by:
        why = f": “{_plain(review.message)}”" if review.message else ""
        facts.append(f"- **Planned by** {_plain(review.created_by)}{why}")
    if review.planned_at:
        facts.append(f"- **Planned at** {review.planned_at}")
    if review.plan_hash:
        facts.append(f"- **Plan hash** {code(review.plan_hash)}")
    if review.confirmed_by:
        facts.append(f"- **Confirmed by** {_plain(review.confirmed_by)}")
    if review.cancelled_by:
        facts.append(f"- **Cancelled by** {_plain(review.cancelled_by)}")
    if review.error:
        facts.append(f"- **Error** {_plain(review.error)}")
    return out + facts + ([""] if facts else [])


def _counts(review: Review) -> list[str]:
    if review.counts is None:
        return ["No plan was saved: there is nothing to review or apply.", ""]
    if not review.changes and not review.counts.any:
        return ["**No changes.** The infrastructure matches the configuration.", ""]
    out = [f"**Plan:** {counts_sentence(review.counts, moves=review.moves, reads=review.reads)}."]
    relation = relation_to_terraform(review.counts)
    if relation:
        out.append(f"<br>{_plain(relation)}")
    if any(is_destructive(c) for c in review.changes):
        destroys = sum(1 for c in review.changes if c.action == "delete")
        replaces = sum(1 for c in review.changes if c.action == "replace")
        out.append("")
        out.append(f"> [!WARNING]\n> This plan destroys {destroys} and replaces {replaces} resource(s): "
                   "they are listed first.")
    return [*out, ""]


def _row(change: str, address: str, details: Iterable[str]) -> str:
    cell = "<br>".join(code(d) for d in details)
    return f"| {change} | {code(address)} | {cell} |"


def _changes_table(review: Review) -> list[str]:
    if not review.changes:
        return []
    out = ["| Change | Address | What changes |", "| --- | --- | --- |"]
    for c in destroys_first(review.changes):
        word = _ACTION_WORDS.get(c.action, _plain(c.action))
        details = list(c.changes)
        if c.moved_from:
            details.insert(0, f"moved from {c.moved_from}")
        out.append(_row(("⚠️ " if is_destructive(c) else "") + word, c.address, details))
    return [*out, ""]


def _drift_table(review: Review) -> list[str]:
    if not review.drift:
        return []
    out = ["**Changed outside Terraform** (found by the plan's refresh):", "",
           "| Drift | Address | What changed |", "| --- | --- | --- |"]
    out += [_row(_ACTION_WORDS.get(c.action, _plain(c.action)), c.address, c.changes) for c in review.drift]
    return [*out, ""]


def _run_tasks(review: Review) -> list[str]:
    if not review.run_tasks:
        return []
    out = ["**Run tasks:**", ""]
    for r in review.run_tasks:
        mark = {"passed": "✅", "failed": "❌", "errored": "❌"}.get(r.status, "⏳")
        out.append(f"- {mark} {_plain(r.summary)}")
    return [*out, ""]


def _commands(review: Review) -> list[str]:
    if not review.waits_for_confirmation:
        return []
    pin = f" --plan-hash {review.plan_hash}" if review.plan_hash else ""
    return ["To apply exactly this plan, or to discard it:", "",
            _fence([f"iacctl confirm-apply {review.task}{pin}", f"iacctl cancel {review.task}"]), ""]


def _details(summary: str, lines: list[str]) -> list[str]:
    return ["<details><summary>" + summary + "</summary>", "", _fence(lines), "", "</details>", ""]


def review_markdown(review: Review, *, limit: int = COMMENT_LIMIT) -> str:
    """The whole review, at most `limit` characters: Terraform's text is cut first, then the
    table's last rows, each at a line boundary with a line saying what was left out and how to
    see it whole (nothing is ever cut inside a word, a row or a fence)."""
    head = _head(review) + _counts(review)
    tail = _run_tasks(review) + _commands(review)
    rows = _changes_table(review)
    drift = _drift_table(review)
    text_lines = list(review.plan_text)
    label = "Terraform's plan output" if review.counts is not None else "Terraform's output"

    def build(rows: list[str], text: list[str], left_rows: int, left_text: int) -> str:
        parts = list(head) + rows
        if left_rows:
            parts += [f"_…and {left_rows} more change(s) not shown here (GitHub's comment limit): see them "
                      f"all with `iacctl tasks plan {review.task}`._", ""]
        parts += drift + tail
        if text:
            summary = label + (f" (the first {len(text)} of {len(text) + left_text} lines)" if left_text else "")
            parts += _details(summary, text)
            if left_text:
                parts += [f"_{left_text} more line(s) of Terraform's output left out (GitHub's comment limit): "
                          f"see them whole with `iacctl tasks logs {review.task}`._", ""]
        elif left_text:
            parts += [f"_Terraform's output ({left_text} lines) left out (GitHub's comment limit): see it "
                      f"with `iacctl tasks logs {review.task}`._", ""]
        return "\n".join(parts).rstrip("\n") + "\n"

    whole = build(rows, text_lines, 0, 0)
    if len(whole) <= limit:
        return whole
    # Terraform's text goes first: it repeats what the table says.
    fixed = len(build(rows, [], 0, len(text_lines)))
    kept: list[str] = []
    room = limit - fixed - 400  # the <details> wrapper and the note about what was left out
    for line in text_lines:
        if room - (len(line) + 1) < 0:
            break
        kept.append(line)
        room -= len(line) + 1
    if fixed <= limit and kept:
        return build(rows, kept, 0, len(text_lines) - len(kept))
    if fixed <= limit:
        return build(rows, [], 0, len(text_lines))
    # Then the table's last rows (the destroys and replacements come first and stay).
    header, body = rows[:2], rows[2:-1]
    room = limit - len(build([], [], 1, len(text_lines))) - 200
    shown: list[str] = []
    for row in body:
        if room - (len(row) + 1) < 0:
            break
        shown.append(row)
        room -= len(row) + 1
    return build(header + shown + [""], [], len(body) - len(shown), len(text_lines))


def applied_markdown(review: Review, state_version: int | None) -> str:
    """The job summary of `confirm-apply`: what was applied, by whom, and the outcome."""
    lines = _head(review)
    if review.counts is not None:
        lines.append(f"**Applied:** {counts_sentence(review.counts, moves=review.moves, reads=review.reads)}"
                     + (f"; state version {state_version}." if state_version else "."))
        lines.append("")
    return "\n".join(lines + _run_tasks(review)).rstrip("\n") + "\n"


def ended_markdown(review: Review) -> str:
    """The job summary of `cancel` (or of a task that ended without a review to show)."""
    return "\n".join(_head(review) + _counts(review)).rstrip("\n") + "\n"
