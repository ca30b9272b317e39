"""The README's usage examples run as written and compute the values they show.

A value is shown as a comment that starts with a number, after an assignment
(`T = jaxce.fit_temperature(logits, labels)  # 2.48`) or a print; the example
must compute it to the digits written.
"""

import ast
import io
import pathlib
import re
import tokenize

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
SHOWN = re.compile(r"#\s*(-?\d+(?:\.\d+)?)(?:\s|$)")


def _shown_values(block):
    """{line number: the number its comment shows} for one code block."""
    comments = (
        token
        for token in tokenize.generate_tokens(io.StringIO(block).readline)
        if token.type == tokenize.COMMENT
    )
    return {
        token.start[0]: match.group(1) for token in comments if (match := SHOWN.match(token.string))
    }


def _is_print(statement):
    call = statement.value if isinstance(statement, ast.Expr) else None
    return (
        isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "print"
    )


def _computed_values(block, name, capsys):
    """Runs `block` a statement at a time: {line number: value computed there, as shown}."""
    shown = _shown_values(block)
    namespace, computed = {}, {}
    for statement in ast.parse(block).body:
        exec(compile(ast.Module([statement], []), name, "exec"), namespace)
        printed = capsys.readouterr().out
        line = statement.end_lineno
        if line not in shown:
            continue
        if _is_print(statement):
            value = float(printed)
        else:
            assert isinstance(statement, ast.Assign) and len(statement.targets) == 1, (
                f"{name}, line {line}: a shown value follows `name = ...` or `print(...)`"
            )
            value = float(namespace[statement.targets[0].id])
        computed[line] = f"{value:.{len(shown[line].partition('.')[2])}f}"
    return computed


def test_readme_has_examples():
    assert BLOCKS, "README.md should contain python examples"


def test_readme_shows_values():
    assert any(_shown_values(block) for block in BLOCKS), "no README example shows a value"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_asserts_its_result(index):
    statements = ast.walk(ast.parse(BLOCKS[index]))
    assert any(isinstance(node, ast.Assert) for node in statements), (
        f"README.md python example {index} checks nothing"
    )


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_computes_what_it_shows(index, capsys):
    computed = _computed_values(BLOCKS[index], f"README.md[{index}]", capsys)
    assert computed == _shown_values(BLOCKS[index])
