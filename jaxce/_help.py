"""Plain-text help: `help(jaxce.softmax_cross_entropy)` reads in an 80-column terminal.

The docstrings are written for the documentation site, which mkdocstrings
renders from the source: formulas in TeX between `$` signs, cross-references
as `[text][jaxce.name]`. `plain_help` gives each public object, once at
import, a runtime `__doc__` with the formulas in Unicode plain text and the
cross-references as their text, and a `__signature__` that prints one
parameter a line where the one-line form would not fit. The source, and so
the site, keeps the TeX.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Iterable
from typing import Any

WIDTH = 80
# pydoc indents a class's members by " |  ".
_MEMBER_INDENT = 4

_SYMBOLS = {
    "alpha": "α",
    "beta": "β",
    "gamma": "γ",
    "delta": "δ",
    "epsilon": "ϵ",
    "varepsilon": "ε",
    "zeta": "ζ",
    "eta": "η",
    "theta": "θ",
    "lambda": "λ",
    "mu": "μ",
    "pi": "π",
    "rho": "ρ",
    "sigma": "σ",
    "tau": "τ",
    "phi": "φ",
    "Sigma": "Σ",
    "ell": "ℓ",
    "infty": "∞",
    "in": "∈",
    "ne": "≠",
    "neq": "≠",
    "le": "≤",
    "leq": "≤",
    "ge": "≥",
    "geq": "≥",
    "approx": "≈",
    "gtrsim": "≳",
    "lesssim": "≲",
    "pm": "±",
    "times": "×",
    "cdot": "·",
    "odot": "⊙",
    "to": "→",
    "mapsto": "↦",
    "star": "*",
    "dots": "…",
    "ldots": "…",
    "cdots": "⋯",
    "mid": "|",
    "|": "‖",
    "{": "{",
    "}": "}",
    "%": "%",
    "$": "$",
    "&": "&",
    "#": "#",
    "_": "_",
    ",": " ",
    ":": " ",
    ";": " ",
    " ": " ",
    "!": "",
}
# Symbols that TeX sets close to what follows or precedes them.
_PREFIXES = {"partial": "∂", "nabla": "∇", "lfloor": "⌊", "lceil": "⌈", "lvert": "|", "langle": "⟨"}
_CLOSERS = {"rfloor": "⌋", "rceil": "⌉", "rvert": "|", "rangle": "⟩"}
# Operators that TeX separates from a neighbouring letter by a space.
_OPERATORS = {
    "log": "log",
    "exp": "exp",
    "max": "max",
    "min": "min",
    "arg": "arg",
    "tanh": "tanh",
    "sum": "Σ",
    "prod": "Π",
    "bmod": "mod",
}
_SIZES = {"big", "Big", "bigg", "Bigg", "left", "right", "displaystyle", "limits"}
_ACCENTS = {
    "tilde": ("\u0303", "tilde"),
    "widetilde": ("\u0303", "tilde"),
    "hat": ("\u0302", "hat"),
    "widehat": ("\u0302", "hat"),
    "bar": ("\u0304", "bar"),
    "overline": ("\u0304", "bar"),
}
_BLACKBOARD = {"R": "ℝ", "N": "ℕ", "Z": "ℤ", "E": "E"}
_SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
_ARGUMENTS = {
    **dict.fromkeys(("frac", "tfrac", "dfrac"), 2),
    **dict.fromkeys(("sqrt", "operatorname", "mathrm", "mathbb", "text", "textrm"), 1),
    **dict.fromkeys(("mathit", "mathbf", "mathsf", *_ACCENTS), 1),
}
# A wide space (\quad, \qquad) until the spaces are collapsed.
_WIDE = "\0"


_CONTROL_NAME = re.compile(r"[A-Za-z]+|.", re.S)


def _is_atom(text: str, scripts: bool = False) -> bool:
    """Whether `text` needs no parentheses after `_` or `^`, or (`scripts`: it
    may have subscripts itself) as the numerator or denominator of a `/`."""
    return bool(text) and not re.search(
        r"[\s+\-=,/<>:|]" if scripts else r"[\s+\-=,/_^()\[\]<>:|]", text
    )


def _joins_word(char: str) -> bool:
    return char.isalnum() or char in ")]" or "\u0300" <= char <= "\u036f"


class _TeX:
    """Converts the TeX of one formula to plain text (the subset jaxce's docstrings use)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.at = 0

    def convert(self) -> str:
        out = self._until_group_end()
        lines = []
        for line in out.split("\n"):
            line = re.sub(r"(?<=\S)[ \t]{2,}", " ", line.rstrip())
            line = re.sub(rf"^([ \t]*){_WIDE}[ \t{_WIDE}]*", r"\1", line)
            lines.append(re.sub(rf"[ \t]*{_WIDE}[ \t{_WIDE}]*", "    ", line).rstrip())
        return "\n".join(lines)

    def _until_group_end(self) -> str:
        out: list[str] = []
        space_after = False  # after an operator or a fraction

        def emit(text: str, operator: bool = False) -> None:
            nonlocal space_after
            if not text:
                return
            tail = out[-1][-1] if out else ""
            if (operator and tail and _joins_word(tail)) or (
                space_after and (text[0].isalnum() or text[0] in "∂√")
            ):
                out.append(" ")
            out.append(text)
            space_after = operator

        while self.at < len(self.source):
            char = self.source[self.at]
            self.at += 1
            if char == "}":
                break
            if char == "{":
                emit(self._until_group_end())
            elif char in "_^":
                script = self._argument()
                if char == "^" and re.fullmatch(r"-?[0-9]+|\*", script):
                    out.append(script.translate(_SUPERSCRIPTS))
                else:
                    out.append(char + (script if _is_atom(script) else f"({script})"))
                space_after = False
            elif char == "~":
                emit(" ")
            elif char != "\\":
                emit(char)
            else:
                name = self._control_name()
                if name in _SIZES:
                    continue
                if name in ("frac", "tfrac", "dfrac"):
                    top, bottom = self._argument(), self._argument()
                    top = top if _is_atom(top, scripts=True) else f"({top})"
                    bottom = bottom if _is_atom(bottom, scripts=True) else f"({bottom})"
                    emit(f"{top}/{bottom}")
                    space_after = True
                elif name == "sqrt":
                    root = self._argument()
                    emit("√" + (root if _is_atom(root) else f"({root})"))
                elif name in _ACCENTS:
                    mark, word = _ACCENTS[name]
                    base = self._argument()
                    emit(base + mark if len(base) == 1 else f"{word}({base})")
                elif name in ("operatorname", "mathrm"):
                    emit(self._argument(), operator=True)
                elif name in ("text", "textrm", "mathit", "mathbf", "mathsf"):
                    emit(self._argument())
                elif name == "mathbb":
                    letter = self._argument()
                    emit(_BLACKBOARD.get(letter, letter))
                elif name in ("quad", "qquad"):
                    emit(_WIDE)
                elif name in _OPERATORS:
                    emit(_OPERATORS[name], operator=True)
                elif name in _PREFIXES:
                    emit(_PREFIXES[name])
                    self._skip_spaces()
                elif name in _CLOSERS:
                    out[:] = ["".join(out).rstrip(" \t")]
                    emit(_CLOSERS[name])
                else:
                    # An unknown control word reads as its name, never as TeX.
                    emit(_SYMBOLS.get(name, name))
        return "".join(out)

    def _control_name(self) -> str:
        match = _CONTROL_NAME.match(self.source, self.at)
        if match is None:
            return ""
        self.at = match.end()
        return match.group()

    def _skip_spaces(self) -> None:
        while self.at < len(self.source) and self.source[self.at] in " \t":
            self.at += 1

    def _argument(self) -> str:
        """The next group, control word or character, converted."""
        self._skip_spaces()
        if self.at >= len(self.source):
            return ""
        char = self.source[self.at]
        if char == "{":
            self.at += 1
            return _TeX(self._group_source()).convert()
        if char == "\\":
            start = self.at
            self.at += 1
            name = self._control_name()
            for _ in range(_ARGUMENTS.get(name, 0)):
                self._argument()
            return _TeX(self.source[start : self.at]).convert()
        self.at += 1
        return char

    def _group_source(self) -> str:
        """The source up to the `}` that closes the group just opened."""
        depth, start = 1, self.at
        while self.at < len(self.source):
            char = self.source[self.at]
            self.at += 1
            if char == "\\":
                self.at += 1
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    return self.source[start : self.at - 1]
        return self.source[start:]


def formula(tex: str) -> str:
    """A TeX formula as plain text: `\\frac{1}{S}\\sum_i x_{ic}` becomes `1/S Σ_i x_ic`."""
    return _TeX(tex).convert()


_DISPLAY_BLOCK = re.compile(r"^([ \t]*)\$\$[ \t]*\n(.*?)\n[ \t]*\$\$[ \t]*$", re.M | re.S)
_DISPLAY_LINE = re.compile(r"^([ \t]*)\$\$(.+?)\$\$[ \t]*$", re.M)
_INLINE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$", re.S)
_CROSS_REFERENCE = re.compile(r"\[([^\[\]]+)\]\[(?:jaxce(?:\.\w+)*)?\]")


def _indent(text: str) -> str:
    return "\n".join("    " + line if line.strip() else line for line in text.split("\n"))


def _prose(text: str) -> str:
    # The `$$` lines become blank lines, so that a doctest's line number still
    # points at its line in the source.
    text = _DISPLAY_BLOCK.sub(lambda m: "\n" + _indent(formula(m.group(2))) + "\n", text)
    text = _DISPLAY_LINE.sub(lambda m: m.group(1) + "    " + formula(m.group(2)), text)
    text = _INLINE.sub(lambda m: formula(m.group(1) or m.group(2)), text)
    return _CROSS_REFERENCE.sub(r"\1", text)


def plain_text(doc: str) -> str:
    """A docstring with its formulas and cross-references in plain text; doctests unchanged."""
    pieces: list[tuple[bool, list[str]]] = []
    example = False
    for line in doc.split("\n"):
        stripped = line.strip()
        example = stripped.startswith(">>>") or (example and bool(stripped))
        if pieces and pieces[-1][0] == example:
            pieces[-1][1].append(line)
        else:
            pieces.append((example, [line]))
    return "\n".join(
        "\n".join(lines) if example else _prose("\n".join(lines)) for example, lines in pieces
    )


def _annotation(annotation: Any) -> str:
    # Annotations are strings under `from __future__ import annotations`.
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, typing.ForwardRef):
        return annotation.__forward_arg__
    return inspect.formatannotation(annotation)


def _parameter(parameter: inspect.Parameter) -> str:
    text = parameter.name
    if parameter.annotation is not parameter.empty:
        text += ": " + _annotation(parameter.annotation)
    if parameter.default is not parameter.empty:
        equals = " = " if parameter.annotation is not parameter.empty else "="
        text += equals + repr(parameter.default)
    if parameter.kind is parameter.VAR_POSITIONAL:
        return "*" + text
    if parameter.kind is parameter.VAR_KEYWORD:
        return "**" + text
    return text


class Signature(inspect.Signature):
    """A signature that prints one parameter a line where one line would pass `width`.

    pydoc prints `name + str(inspect.signature(obj))`, and `inspect.signature`
    returns an object's `__signature__`; `parameters` and binding are
    `inspect.Signature`'s.
    """

    # Until `_set_signature` knows the title: room beside a 20-column name.
    width = WIDTH - _MEMBER_INDENT - 20

    def replace(self, **changes: Any) -> Signature:
        # inspect drops `self` with `replace`; the width must survive it.
        new = super().replace(**changes)
        new.width = self.width
        return new

    def __str__(self) -> str:
        parts: list[str] = []
        positional_only = False
        keyword_only_marker = True
        for parameter in self.parameters.values():
            if parameter.kind is parameter.POSITIONAL_ONLY:
                positional_only = True
            elif positional_only:
                parts.append("/")
                positional_only = False
            if parameter.kind is parameter.VAR_POSITIONAL:
                keyword_only_marker = False
            elif parameter.kind is parameter.KEYWORD_ONLY and keyword_only_marker:
                parts.append("*")
                keyword_only_marker = False
            parts.append(_parameter(parameter))
        if positional_only:
            parts.append("/")
        returns = ""
        if self.return_annotation is not self.empty:
            returns = " -> " + _annotation(self.return_annotation)
        line = f"({', '.join(parts)}){returns}"
        if len(line) <= self.width:
            return line
        return "(\n" + "".join(f"    {part},\n" for part in parts) + ")" + returns


def _set_signature(function: types.FunctionType, title: str) -> None:
    signature = function.__dict__.get("__signature__")
    if not isinstance(signature, Signature):
        signature = Signature.from_callable(function)
        function.__signature__ = signature  # type: ignore[attr-defined]
    signature.width = min(signature.width, WIDTH - _MEMBER_INDENT - len(title))


def _set_doc(obj: Any) -> None:
    doc = getattr(obj, "__doc__", None)
    plain = plain_text(doc) if doc else doc
    if plain != doc:
        obj.__doc__ = plain


def _class(cls: type) -> None:
    _set_doc(cls)
    for klass in cls.__mro__:
        if klass.__module__.partition(".")[0] != __name__.partition(".")[0]:
            continue
        for name, member in vars(klass).items():
            function = getattr(member, "__func__", member)
            if isinstance(member, property):
                _set_doc(member)
            if not isinstance(function, types.FunctionType):
                continue
            _set_doc(function)
            # pydoc titles a member bound to another name `name = realname`.
            title = name if name == function.__name__ else f"{name} = {function.__name__}"
            if name in ("__init__", "__new__"):
                # The class's own line shows this signature too.
                title = max(title, cls.__name__, key=len)
            _set_signature(function, title)


def plain_help(objects: Iterable[Any]) -> None:
    """Gives each public object, and each method of a public class, its plain-text help."""
    for obj in objects:
        if isinstance(obj, type):
            _class(obj)
        elif isinstance(obj, types.FunctionType):
            _set_doc(obj)
            _set_signature(obj, obj.__name__)
