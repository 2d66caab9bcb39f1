import pytest

from rsdlib.tables import format_value, latex_escape, to_latex, to_markdown, write_table

ROWS = [
    {"method": "rfsq_ar", "success_%": 81.0, "latency_ms": 12.345, "n": 50},
    {"method": "rsd (exact)", "success_%": 80.5, "latency_ms": 0.0042, "n": 50, "note": "lossless"},
]


def test_markdown_has_a_row_per_entry_union_of_columns_and_right_aligned_numbers():
    md = to_markdown(ROWS).splitlines()
    assert md[0] == "| method | success_% | latency_ms | n | note |"
    assert md[1] == "|---|---:|---:|---:|---|"
    assert md[2] == "| rfsq_ar | 81 | 12.3 | 50 |  |"
    assert md[3] == "| rsd (exact) | 80.5 | 4.20e-03 | 50 | lossless |"


def test_latex_is_booktabs_and_escaped():
    tex = to_latex(ROWS, caption="Success & latency_50%", label="tab:main")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"\begin{tabular}{lrrrl}" in tex
    assert r"success\_\%" in tex
    assert r"\caption{Success \& latency\_50\%}" in tex and r"\label{tab:main}" in tex
    assert latex_escape("a_b{c}") == r"a\_b\{c\}"


def test_write_table_writes_both_files_identically_twice(tmp_path):
    first = [p.read_bytes() for p in write_table(ROWS, tmp_path / "t1", "caption")]
    second = [p.read_bytes() for p in write_table(ROWS, tmp_path / "t2.md", "caption")]
    assert first == second
    assert (tmp_path / "t2.tex").exists()


def test_formatting_and_empty_tables():
    assert [format_value(v) for v in (None, 0.0, 1234.5, 12345.0, 3, "x")] == [
        "",
        "0",
        "1234",
        "1.23e+04",
        "3",
        "x",
    ]
    with pytest.raises(ValueError, match="at least one row"):
        to_markdown([])
