"""
Tests for L{wings_twisted.fs.ignore} and L{wings_twisted.fs.goregex}: the go-gitignore translation
of backups.md section 4.4.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.fs.goregex import go_regex_to_python
from wings_twisted.fs.ignore import IgnoreMatcher, compile_line, translate_line

_PROPERTY = settings(max_examples=300, deadline=None, database=None)


class TranslateLineTests(SynchronousTestCase):
    """
    L{translate_line} produces upstream's Go expression text.
    """

    def test_spec_table(self) -> None:
        """
        Every rule of the table in backups.md section 4.4 translates to the listed expression.
        """
        table = {
            "*.log": r"^(|.*/)([^/]*)\.log(|/.*)$",
            "logs/": r"^(|.*/)logs/(|.*)$",
            "/logs": r"^(|/)logs(|/.*)$",
            "world/*.mca": r"^(|/)world/([^/]*)\.mca(|/.*)$",
            "cache/**": r"^(|.*/)cache(|/.*)(|/.*)$",
            "a/**/b": r"^(|.*/)a(/|/.+/)b(|/.*)$",
            "file?.txt": r"^(|.*/)file\?\.txt(|/.*)$",
        }
        for line, expected in table.items():
            self.assertEqual(translate_line(line), (expected, False), line)

    def test_comments_and_blanks(self) -> None:
        """
        Blank lines, lines of spaces and lines starting with C{#} (before trimming) are skipped.
        """
        for line in ["", "   ", "#comment", "#", "\r\r", "# spaced"]:
            self.assertIsNone(translate_line(line), repr(line))

    def test_comment_test_before_trim(self) -> None:
        """
        A C{#} after leading spaces is not a comment; step 6 then drops the C{#} itself.
        """
        self.assertEqual(translate_line("  #x"), (r"^(|.*/)x(|/.*)$", False))

    def test_only_spaces_trimmed(self) -> None:
        """
        Tabs survive trimming; trailing carriage returns are removed first.
        """
        self.assertEqual(translate_line("\tx \r\r"), ("^(|.*/)\tx(|/.*)$", False))

    def test_negation(self) -> None:
        """
        A leading C{!} negates; one further C{!} or C{#} is dropped.
        """
        self.assertEqual(translate_line("!keep.log"), (r"^(|.*/)keep\.log(|/.*)$", True))
        self.assertEqual(translate_line("!#x"), (r"^(|.*/)x(|/.*)$", True))
        self.assertEqual(translate_line("!!x"), (r"^(|.*/)x(|/.*)$", True))

    def test_empty_negations_are_rules(self) -> None:
        """
        C{!}, C{!#} and C{!!} are not skipped: they yield the negated empty rule.
        """
        for line in ["!", "!#", "!!"]:
            self.assertEqual(translate_line(line), (r"^(|.*/)(|/.*)$", True), line)

    def test_backslash_is_not_an_escape(self) -> None:
        """
        C{\\#} keeps its backslash (the C{#} is not dropped by step 6).
        """
        self.assertEqual(translate_line(r"\#x"), (r"^(|.*/)\#x(|/.*)$", False))

    def test_implicit_anchor(self) -> None:
        """
        Only the C{dir/*.ext} shape is anchored implicitly; other inner slashes are not.
        """
        self.assertEqual(translate_line("a/b"), (r"^(|.*/)a/b(|/.*)$", False))
        self.assertEqual(translate_line("a/x*.c"), (r"^(|/)a/x([^/]*)\.c(|/.*)$", False))
        # The character before the slash must not be "+" or "/".
        self.assertEqual(translate_line("+/*.c"), (r"^(|.*/)+/([^/]*)\.c(|/.*)$", False))

    def test_escaped_star_and_magic_placeholder(self) -> None:
        """
        C{\\*} stays a literal star; upstream's placeholder C{#$~} in a rule becomes a regex star.
        """
        self.assertEqual(translate_line(r"a\*b"), (r"^(|.*/)a\*b(|/.*)$", False))
        self.assertEqual(translate_line("a#$~"), (r"^(|.*/)a*(|/.*)$", False))

    def test_leading_double_star(self) -> None:
        """
        C{/**/x} loses its first slash, then C{**/} becomes an optional directory prefix.
        """
        self.assertEqual(translate_line("/**/x"), (r"^(|.*/)(|.*/)x(|/.*)$", False))
        self.assertEqual(translate_line("**/x"), (r"^(|.*/)(|.*/)x(|/.*)$", False))


class IgnoreMatcherTests(SynchronousTestCase):
    """
    L{IgnoreMatcher} applies compiled rules with upstream's marking semantics.
    """

    def assertMatches(self, lines: list[str], yes: list[str], no: list[str]) -> None:
        matcher = IgnoreMatcher(lines)
        for path in yes:
            self.assertTrue(matcher.matches(path), "%r should match %r" % (lines, path))
        for path in no:
            self.assertFalse(matcher.matches(path), "%r should not match %r" % (lines, path))

    def test_spec_examples(self) -> None:
        """
        The Matches / Does-not-match columns of the backups.md table hold.
        """
        self.assertMatches(["*.log"], ["latest.log", "logs/2024.log"], ["log.txt"])
        self.assertMatches(["logs/"], ["logs/a", "x/logs/a"], ["logs"])
        self.assertMatches(["/logs"], ["logs", "logs/a"], ["x/logs/a"])
        self.assertMatches(["world/*.mca"], ["world/r.0.0.mca"], ["x/world/r.mca"])
        self.assertMatches(["cache/**"], ["cache/a/b", "x/cache/a"], [])
        self.assertMatches(["a/**/b"], ["a/b", "a/x/y/b"], ["ab"])
        self.assertMatches(["file?.txt"], ["file?.txt"], ["file1.txt"])
        self.assertMatches(["*.log", "!keep.log"], ["a.log"], ["keep.log", "x/keep.log"])

    def test_question_mark_is_literal(self) -> None:
        """
        C{?} matches only a question mark, not any character.
        """
        self.assertMatches(["a?"], ["a?", "x/a?"], ["ab", "a"])

    def test_regex_operators_are_live(self) -> None:
        """
        Parentheses, C{+} and C{|} keep their regular-expression meaning.
        """
        self.assertMatches(["file(1).txt"], ["file1.txt"], ["file(1).txt"])
        self.assertMatches(["ab+c"], ["abbbc", "abc"], ["ab+c", "ac"])
        self.assertMatches(["[a-c]x"], ["bx"], ["dx"])

    def test_top_level_alternation(self) -> None:
        """
        A top-level C{|} splits the whole expression: the second branch is not anchored at the
        start, which is why matching is a search and not a full match.
        """
        self.assertMatches(["a|b"], ["a", "x/a/y", "xb", "x/b/y"], ["bx", "za"])

    def test_inner_slash_not_anchored(self) -> None:
        """
        A rule with an inner slash matches at any depth unless it starts with C{/}.
        """
        self.assertMatches(["a/b"], ["a/b", "x/a/b", "a/b/c"], ["a/bc"])
        self.assertMatches(["/a/b"], ["a/b", "/a/b"], ["x/a/b"])

    def test_trailing_slash_only_beneath(self) -> None:
        """
        C{dir/} never matches the directory's own path, only what is beneath it.
        """
        self.assertMatches(["config/"], ["config/a.yml", "x/config/a"], ["config", "configs/a"])

    def test_negation_beneath_denied_directory(self) -> None:
        """
        A later negation clears the mark even beneath a denied directory; an earlier one does not.
        """
        self.assertMatches(["secret/", "!secret/ok.txt"], ["secret/a"], ["secret/ok.txt"])
        self.assertMatches(["!secret/ok.txt", "secret/"], ["secret/ok.txt"], [])

    def test_empty_negation(self) -> None:
        """
        The negated empty rule clears the mark of paths with a leading C{/} only.
        """
        self.assertMatches(["*", "!"], ["a", "a/b"], ["/a", "a/"])

    def test_dollar_is_end_of_text(self) -> None:
        """
        The final C{$} does not match before a trailing newline (Go semantics, not Python's).
        """
        self.assertMatches(["foo"], ["foo", "foo/x"], ["foo\n", "foox"])
        self.assertMatches(["a$b"], [], ["ab", "a$b", "a\nb"])

    def test_braces_that_are_not_repetitions(self) -> None:
        """
        Brace forms Go does not read as repetitions are literal braces.
        """
        self.assertMatches(["x{,3}"], ["x{,3}"], ["xxx", "x"])
        self.assertMatches(["x{01}"], ["x{01}"], ["x"])
        self.assertMatches(["x{2}"], ["xx"], ["x{2}", "x"])

    def test_perl_classes_are_ascii(self) -> None:
        """
        C{\\d}, C{\\w} and C{\\s} follow Go's ASCII definitions (no vertical tab in C{\\s}).
        """
        self.assertMatches([r"a\d"], ["a1"], ["a\u0663", "ax"])
        self.assertMatches([r"a\sb"], ["a b", "a\tb"], ["a\x0bb", "a\u00a0b"])
        self.assertMatches([r"a\wb"], ["a_b"], ["a\u00e9b"])

    def test_posix_classes(self) -> None:
        """
        POSIX classes inside brackets are understood as Go does.
        """
        self.assertMatches(["x[[:digit:]]"], ["x1"], ["xa", "x[[:digit:]]"])

    def test_escaped_star_literal(self) -> None:
        """
        C{\\*} matches a star only.
        """
        self.assertMatches([r"a\*b"], ["a*b"], ["axb", "ab"])

    def test_placeholder_star(self) -> None:
        """
        Upstream's placeholder C{#$~} turns into a regular-expression star.
        """
        self.assertMatches(["a#$~"], ["", "aaa", "x/aa"], ["b"])

    def test_bad_lines_skipped(self) -> None:
        """
        Lines whose expression Go would refuse are skipped without affecting the other rules.
        """
        bad = [
            "a++",  # possessive in Python 3.11, nested repetition in Go
            r"(a)\1",  # back reference
            "(a",
            "a)",
            "[a",
            "x{1001}",
            "(a{100}){11}",  # product of nested counts above 1000
            r"a\pL",  # Unicode class: no Python equivalent
            r"a\C",
            r"a\Z",
            "a\\",
            "a{2}{3}",
            "a#$~+",  # becomes "a*+"
            "[z-a]",
            "[[:nope:]]",
        ]
        for line in bad:
            self.assertIsNone(compile_line(line), repr(line))
        matcher = IgnoreMatcher(bad + ["*.log"])
        self.assertEqual(len(matcher), 1)
        self.assertTrue(matcher.matches("x.log"))

    def test_go_constructs_converted(self) -> None:
        """
        Go-only constructs are rewritten: repeated assertions, C{\\z}, C{\\Q...\\E}, hex and
        octal escapes.
        """
        self.assertIsNotNone(go_regex_to_python("^*a"))
        self.assertMatches([r"a\Q+(\E"], ["a+("], ["a+", "aa"])
        self.assertMatches([r"a\x{41}\x42\101"], ["aABA"], [])
        self.assertMatches([r"a\z"], ["a"], ["a\n"])

    @_PROPERTY
    @given(st.text(max_size=40), st.text(max_size=40))
    def test_never_raises(self, line: str, path: str) -> None:
        """
        Any line compiles or is skipped, and matching any path returns a boolean.
        """
        matcher = IgnoreMatcher([line])
        self.assertIsInstance(matcher.matches(path), bool)

    @_PROPERTY
    @given(
        st.text(alphabet="ab*./!", min_size=1, max_size=12),
        st.lists(st.sampled_from(["a", "b", "a.b", "ab"]), min_size=1, max_size=4),
    )
    def test_glob_lines_compile(self, line: str, parts: list[str]) -> None:
        """
        Lines made of ordinary glob characters always compile, and a non-negated rule that
        matches a path also matches everything beneath it.
        """
        compiled = compile_line(line)
        if compiled is None:
            # Only comment-like or empty lines are skipped.
            self.assertIsNone(translate_line(line))
            return
        pattern, _ = compiled
        path = "/".join(parts)
        if pattern.search(path):
            self.assertTrue(pattern.search(path + "/child"))
