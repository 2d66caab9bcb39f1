"""Tables for the paper: one list of row dicts in, markdown and booktabs LaTeX out.

Presentation notebooks build rows from saved results and call :func:`write_table`, which
writes ``<stem>.md`` and ``<stem>.tex`` side by side (deterministic text, so unchanged
tables stay byte-identical).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

Row = dict[str, Any]


def format_value(value: Any) -> str:
    """Floats to 3 significant figures (whole from 100, scientific when tiny or huge); None to empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            return f"{value:.2e}"
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def _columns(rows: list[Row]) -> list[str]:
    if not rows:
        raise ValueError("a table needs at least one row")
    columns = list(rows[0])
    for row in rows[1:]:
        columns += [c for c in row if c not in columns]
    return columns


def to_markdown(rows: list[Row]) -> str:
    """A GitHub markdown table; numeric columns are right-aligned."""
    columns = _columns(rows)
    numeric = [all(isinstance(r.get(c), int | float) or r.get(c) is None for r in rows) for c in columns]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(format_value(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    """Escape the characters LaTeX treats specially in table cells."""
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                          ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\~{}")):  # fmt: skip
        text = text.replace(char, escaped)
    return text


def to_latex(rows: list[Row], caption: str, label: str | None = None) -> str:
    """A booktabs LaTeX table (``\\usepackage{booktabs}``); numeric columns right-aligned."""
    columns = _columns(rows)
    align = "".join(
        "r" if all(isinstance(r.get(c), int | float) or r.get(c) is None for r in rows) else "l"
        for c in columns
    )
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(latex_escape(format_value(row.get(c))) for c in columns) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{latex_escape(caption)}}}"]
    if label:
        lines.append(rf"\label{{{label}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(rows: list[Row], stem: str | Path, caption: str, label: str | None = None) -> list[Path]:
    """Write ``stem.md`` (caption, then the table) and ``stem.tex``; returns both paths."""
    stem = Path(stem).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, tex = stem.with_suffix(".md"), stem.with_suffix(".tex")
    md.write_text(f"{caption}\n\n{to_markdown(rows)}")
    tex.write_text(to_latex(rows, caption, label))
    return [md, tex]
