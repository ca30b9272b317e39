"""Documentation coverage, checked as text so that the tests need no MkDocs.

Every public name has an API entry (optax's documentation coverage check,
without Sphinx) and a docstring with a formula and a doctest; every example
script and every page is reachable from the site. `help()` on a public name
reads in an 80-column terminal: no TeX, no cross-reference syntax, the same
doctests on the same lines.
"""

import ast
import doctest
import inspect
import pathlib
import pydoc
import re

import pytest

import jaxce

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
DOCS_TEXT = "\n".join(page.read_text() for page in PAGES)
API_TEXT = "\n".join(page.read_text() for page in sorted((DOCS / "api").glob("*.md")))
API_ENTRIES = re.findall(r"^::: jaxce\.(\w+)[ \t]*$", API_TEXT, flags=re.M)
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("name", jaxce.__all__)
def test_public_name_has_api_entry(name):
    assert name in API_ENTRIES, f"add '::: jaxce.{name}' to a page in docs/api/"


def test_api_entries_are_public_and_unique():
    assert sorted(set(API_ENTRIES)) == sorted(API_ENTRIES), "an API entry appears twice"
    stale = set(API_ENTRIES) - set(jaxce.__all__)
    assert not stale, f"API entries for names not in jaxce.__all__: {sorted(stale)}"


def source_docstring(name):
    """The docstring as the site renders it: read from the source, as mkdocstrings does."""
    module = inspect.getmodule(getattr(jaxce, name))
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return ast.get_docstring(node, clean=False)
    raise AssertionError(f"jaxce.{name} is not defined at the top level of {module.__name__}")


@pytest.mark.parametrize("name", jaxce.__all__)
def test_docstring_has_summary_formula_and_doctest(name):
    doc = inspect.cleandoc(source_docstring(name) or "")
    assert doc, f"jaxce.{name} has no docstring"
    lines = doc.splitlines()
    assert lines[0].strip() and (len(lines) == 1 or not lines[1].strip()), (
        f"jaxce.{name}: the docstring must start with a one-line summary"
    )
    assert re.search(r"\$[^$\n]+\$", doc), f"jaxce.{name}: the docstring has no formula ($...$)"
    assert re.search(r"^Examples:\n(?:[ \t]*\n)*[ \t]+>>> ", doc, flags=re.M), (
        f"jaxce.{name}: the docstring has no 'Examples:' section with a doctest"
    )


def test_examples_exist():
    assert EXAMPLES, "examples/ holds no scripts"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_is_linked_from_docs(path):
    assert f"examples/{path.name}" in DOCS_TEXT, f"no page in docs/ mentions examples/{path.name}"


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [
        p.relative_to(DOCS).as_posix() for p in PAGES if p.relative_to(DOCS).as_posix() not in nav
    ]
    assert not missing, f"pages missing from the nav of mkdocs.yml: {missing}"


def test_figures_in_pages_are_drawn_by_examples():
    scripts = "\n".join(path.read_text() for path in EXAMPLES)
    figures = set(re.findall(r"figures/([\w-]+\.png)", DOCS_TEXT))
    assert len(figures) >= 5
    undrawn = sorted(name for name in figures if f'"{name}"' not in scripts)
    assert not undrawn, f"figures embedded in docs/ but drawn by no example script: {undrawn}"


def signature_lines(text):
    """The lines of each signature pydoc shows: `name(...)` at the start of a line
    (after a class's ` |  `), with its continuation lines up to the closing `)`."""
    lines, inside = [], False
    for line in text.splitlines():
        bare = line.removeprefix(" |  ")
        if not inside and re.match(r"(\w+ = )?\w+\(", bare):
            inside = bare.endswith("(")
            lines.append(line)
        elif inside:
            inside = not bare.startswith(")")
            lines.append(line)
    return lines


def render_help(name):
    return pydoc.render_doc(getattr(jaxce, name), renderer=pydoc.plaintext)


@pytest.mark.parametrize("name", jaxce.__all__)
def test_help_signatures_fit_80_columns(name):
    signatures = signature_lines(render_help(name))
    assert signatures, f"help(jaxce.{name}) shows no signature"
    wide = [line for line in signatures if len(line) > 80]
    assert not wide, f"help(jaxce.{name}): signature lines over 80 columns: {wide}"


@pytest.mark.parametrize("name", jaxce.__all__)
def test_help_text_fits_100_columns(name):
    # pydoc's own title line names the module; doctest lines are code, shown as written.
    lines = render_help(name).splitlines()[1:]
    wide = [
        line for line in lines if len(line) > 100 and not re.search(r"^[ |]*(>>>|\.\.\.) ", line)
    ]
    assert not wide, f"help(jaxce.{name}): lines over 100 columns: {wide}"


@pytest.mark.parametrize("name", jaxce.__all__)
@pytest.mark.parametrize(
    ("pattern", "what"),
    [
        pytest.param(r"\$", "a TeX delimiter", id="tex-delimiter"),
        pytest.param(r"\\[A-Za-z]", "a TeX macro", id="tex-macro"),
        pytest.param(r"\]\[jaxce\.", "a cross-reference", id="cross-reference"),
    ],
)
def test_help_shows_no_site_markup(name, pattern, what):
    shown = [line for line in render_help(name).splitlines() if re.search(pattern, line)]
    assert not shown, f"help(jaxce.{name}) shows {what}: {shown}"


@pytest.mark.parametrize("name", jaxce.__all__)
def test_help_keeps_the_doctests_and_their_lines(name):
    parser = doctest.DocTestParser()
    source = parser.get_examples(source_docstring(name))
    shown = parser.get_examples(getattr(jaxce, name).__doc__)
    assert [(e.source, e.want, e.lineno) for e in shown] == [
        (e.source, e.want, e.lineno) for e in source
    ]
