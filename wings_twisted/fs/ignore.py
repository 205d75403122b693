"""
The gitignore approximation shared by the egg file denylist and backup ignore rules.

Upstream Wings compiles both with ``sabhiram/go-gitignore`` at revision ``525f6e1``: every rule
line is translated into one Go (RE2) regular expression, quirks included.  ``backups.md`` section
4.4 makes that translation normative, so this module reproduces it step for step
(`translate_line`) and then compiles the resulting *Go* expression with Python's `re`
(`compile_line`), through `wings_twisted.fs.goregex`, which rewrites it with Go's grammar.

A line whose expression Go would refuse to compile is skipped, as upstream skips it
(``regexp.Compile`` fails and the library drops the rule); so is a line whose expression has no
faithful Python equivalent (see `wings_twisted.fs.goregex` for both lists).  Skipping never raises.
"""

from __future__ import annotations

import re
from typing import Iterable

from .goregex import go_regex_to_python

__all__ = [
    "IgnoreMatcher",
    "compile_line",
    "translate_line",
]

# The placeholder upstream uses so that the stars introduced by the "**" rewrites are not rewritten
# again by the "*" rewrite.  A literal "#$~" in a rule therefore also turns into "*": reproduced.
_MAGIC_STAR = "#$~"

_ESCAPED_HASH_BANG = re.compile(r"^(#|!)")
_DIR_GLOB = re.compile(r"([^/+])/.*\*\.")


def translate_line(line: str) -> tuple[str, bool] | None:
    """
    Translate one rule line into upstream's Go regular expression (``backups.md`` §4.4 steps 1-16).

    :return: ``(expression, negated)``, or ``None`` for a comment or blank line.
    """
    # 1. Trailing carriage returns.
    line = line.rstrip("\r")
    # 2. Comment, tested before trimming.
    if line.startswith("#"):
        return None
    # 3. Only U+0020 is trimmed.
    line = line.strip(" ")
    # 4. Blank.
    if line == "":
        return None
    # 5. Negation.
    negated = False
    if line[0] == "!":
        negated = True
        line = line[1:]
    # 6. One leading "#" or "!" is dropped (backslash escapes are not understood).
    if _ESCAPED_HASH_BANG.search(line):
        line = line[1:]
    # 7. Implicit anchoring of "dir/*.ext".
    if _DIR_GLOB.search(line) and line[0] != "/":
        line = "/" + line
    # 8. Dots.
    line = line.replace(".", "\\.")
    # 9-12. Double stars.
    if line.startswith("/**/"):
        line = line[1:]
    line = line.replace("/**/", "(/|/.+/)")
    line = line.replace("**/", "(|." + _MAGIC_STAR + "/)")
    line = line.replace("/**", "(|/." + _MAGIC_STAR + ")")
    # 13. Escaped stars stay literal, other stars match within one component.
    line = line.replace("\\*", "\\" + _MAGIC_STAR)
    line = line.replace("*", "([^/]*)")
    # 14. "?" is a literal question mark.
    line = line.replace("?", "\\?")
    line = line.replace(_MAGIC_STAR, "*")
    # 15-16. Tail and anchor.
    if line.endswith("/"):
        expr = line + "(|.*)$"
    else:
        expr = line + "(|/.*)$"
    if expr.startswith("/"):
        expr = "^(|/)" + expr[1:]
    else:
        expr = "^(|.*/)" + expr
    return expr, negated


def compile_line(line: str) -> tuple[re.Pattern[str], bool] | None:
    """
    Translate and compile one rule line (``backups.md`` §4.4 steps 1-17).

    :return: ``(pattern, negated)``; ``None`` when the line is a comment or blank, or when its
        expression does not compile (Go refuses it, or it has no faithful Python equivalent; see
        `wings_twisted.fs.goregex`).  Use ``pattern.search`` (as Go's ``MatchString`` does).
    """
    translated = translate_line(line)
    if translated is None:
        return None
    expr, negated = translated
    python_expr = go_regex_to_python(expr)
    if python_expr is None:
        return None
    try:
        pattern = re.compile(python_expr, re.ASCII)
    except (re.error, RecursionError, OverflowError, ValueError):
        return None
    return pattern, negated


class IgnoreMatcher:
    """
    An ordered list of compiled rules with upstream's marking semantics.

    A matching non-negated rule marks the candidate; a matching negated rule clears the mark if it
    is set.  The candidate is matched as given (callers pass volume-relative paths).
    """

    def __init__(self, lines: Iterable[str]) -> None:
        rules: list[tuple[re.Pattern[str], bool]] = []
        for line in lines:
            compiled = compile_line(line)
            if compiled is not None:
                rules.append(compiled)
        self._rules = tuple(rules)

    def __len__(self) -> int:
        """
        The number of rules that compiled.
        """
        return len(self._rules)

    def matches(self, path: str) -> bool:
        """
        Whether the path is marked after applying every rule in order.
        """
        marked = False
        for pattern, negated in self._rules:
            if pattern.search(path) is not None:
                if not negated:
                    marked = True
                elif marked:
                    marked = False
        return marked
