"""Documentation coverage, checked as text so that the tests need no MkDocs.

Every public name has an API entry (optax's documentation coverage check,
without Sphinx) and a docstring with a formula and a doctest; every example
script and every page is reachable from the site.
"""

import inspect
import pathlib
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


@pytest.mark.parametrize("name", jaxce.__all__)
def test_docstring_has_summary_formula_and_doctest(name):
    doc = inspect.getdoc(getattr(jaxce, name))
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
