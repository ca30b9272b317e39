"""MkDocs hook: generated results on the pages, when they exist.

Pages include generated Markdown (benchmark and example results) with the
snippets extension, `--8<-- "path"` relative to the repository root. Where such
a file has not been generated in this checkout, the line is replaced by a note
saying how to produce it, so the site builds with or without results.

The benchmark figures live in `benchmarks/results/`, outside `docs/`; they are
added to the site under their file names, so that `results.md`'s links to them
resolve from `docs/benchmarks.md`.
"""

from __future__ import annotations

import pathlib
import re

from mkdocs.structure.files import File, Files

ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks" / "results"
IMAGES = {".png", ".svg", ".jpg", ".jpeg"}
SNIPPET = re.compile(r'^--8<-- "([^"]+)"[ \t]*$', flags=re.M)
NOT_YET = "No results are recorded in this checkout yet: run "
HOW_TO = {
    "benchmarks/results/results.md": NOT_YET + "`make bench`.",
    "docs/digits_results.md": NOT_YET + "`python examples/digits_calibration.py`.",
}


def on_files(files: Files, config) -> Files:
    if BENCHMARKS.is_dir():
        for path in sorted(BENCHMARKS.iterdir()):
            if path.suffix.lower() in IMAGES and files.get_file_from_path(path.name) is None:
                files.append(File.generated(config, path.name, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    def include_or_note(match: re.Match) -> str:
        path = match.group(1)
        if (ROOT / path).is_file():
            return match.group(0)
        return HOW_TO.get(path, f"`{path}` has not been generated in this checkout.")

    return SNIPPET.sub(include_or_note, markdown)
