"""
Tests for L{wings_twisted.eggconfig}: egg configuration-file rewrites applied to real files in a
temporary volume.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.config import Config, config_from_dict
from wings_twisted.eggconfig import MAX_FILE_SIZE, apply_configs
from wings_twisted.eggconfig.markup import MAX_DEPTH
from wings_twisted.eggconfig.replacements import parse_replacement, resolve_placeholders
from wings_twisted.fs import Volume

INTERFACE = "172.18.0.1"


def _config() -> Config:
    return config_from_dict(
        {"token": "secret-node-token", "docker": {"network": {"interface": INTERFACE}}}
    )


def _entry(file: str, parser: str, *replace: Any) -> dict[str, Any]:
    return {"file": file, "parser": parser, "replace": list(replace)}


def _r(match: Any, value: Any, if_value: Any = None) -> dict[str, Any]:
    raw = {"match": match, "replace_with": value}
    if if_value is not None:
        raw["if_value"] = if_value
    return raw


class _VolumeCase(SynchronousTestCase):
    """
    A volume inside a directory that also holds a sentinel file outside the volume.
    """

    def setUp(self) -> None:
        self.base = FilePath(self.mktemp())
        self.base.makedirs()
        self.outside = self.base.child("outside.txt")
        self.outside.setContent(b"outside\n")
        self.root = self.base.child("volume")
        self.volume = Volume(self.root.path, uid=os.getuid(), gid=os.getgid())
        self.volume.ensure_root()
        self.config = _config()

    def apply(self, *configs: Any) -> list[str]:
        return apply_configs(self.volume, list(configs), self.config)

    def write(self, path: str, content: bytes | str) -> FilePath:
        target = self.root.preauthChild(path)
        target.parent().makedirs(ignoreExistingDirectory=True)
        target.setContent(content.encode("utf-8") if isinstance(content, str) else content)
        return target

    def read(self, path: str) -> str:
        return self.root.preauthChild(path).getContent().decode("utf-8")

    def assert_outside_untouched(self) -> None:
        self.assertEqual(self.outside.getContent(), b"outside\n")
        self.assertEqual(sorted(self.base.listdir()), ["outside.txt", "volume"])

    def assert_no_temporaries(self) -> None:
        for dirpath, _, names in os.walk(self.root.path):
            self.assertEqual([n for n in names if n.startswith(".upload-")], [], dirpath)


# (name, parser, content before, replacements, content after)
_PARSER_TABLE: list[tuple[str, str, str, list[dict[str, Any]], str]] = [
    (
        "file: lines starting with match are replaced, terminators kept",
        "file",
        "# comment\r\nserver-port=1\nmotd=x\nport2=3",
        [_r("server-port", "server-port=25565"), _r("port2", "port2={{config.docker.interface}}")],
        "# comment\r\nserver-port=25565\nmotd=x\nport2=%s" % (INTERFACE,),
    ),
    (
        "file: the last matching replacement wins, if_value is ignored",
        "file",
        "listen 1\n",
        [_r("listen", "listen 2"), _r("list", "listen 3", if_value="nope")],
        "listen 3\n",
    ),
    (
        "properties: values replaced in place, comments and order kept, new keys appended",
        "properties",
        "#Minecraft server properties\n#date\nmotd=A Server\n\n# middle comment\n"
        "server-port = 25565\nonline-mode=true",
        [_r("server-port", "30000"), _r("server-ip", "0.0.0.0"), _r("motd", "\u00a7aHi")],
        "#Minecraft server properties\n#date\nmotd=\\u00A7aHi\n\n# middle comment\n"
        "server-port = 30000\nonline-mode=true\nserver-ip=0.0.0.0\n",
    ),
    (
        "properties: continuation lines, escapes, ':' and whitespace separators",
        "properties",
        "long\\\n   key = a\\\n   b\nk2:v\nk3 v\nk\\=4=v\n",
        [_r("longkey", "x"), _r("k2", "y"), _r("k3", " z"), _r("k=4", "line\nbreak")],
        "longkey = x\nk2:y\nk3 \\ z\nk\\=4=line\\nbreak\n",
    ),
    (
        "properties: if_value compares the decoded current value; missing keys stay missing",
        "properties",
        "server-ip=127.0.0.1\nmotd=\\u00A7a\n",
        [
            _r("server-ip", "0.0.0.0", if_value="127.0.0.1"),
            _r("motd", "changed", if_value="\u00a7a"),
            _r("absent", "1", if_value="x"),
            _r("server-ip", "9.9.9.9", if_value="127.0.0.1"),
        ],
        "server-ip=0.0.0.0\nmotd=changed\n",
    ),
    (
        "properties: a character beyond the BMP is written as a surrogate pair",
        "properties",
        "a=b\n",
        [_r("a", "\U0001f600")],
        "a=\\uD83D\\uDE00\n",
    ),
    (
        "ini: section.key replaced keeping spacing; missing keys and sections added",
        "ini",
        "; top\nname=foo\n\n[server]\nport = 1\n\n[other]\nx:y\n",
        [
            _r("server.port", "2"),
            _r("server.ip", "0.0.0.0"),
            _r("name", "bar"),
            _r("top", "t"),
            _r("[a.b].c", "d"),
            _r("other.x", "$1$1", if_value="regex:^(y)$"),
        ],
        "; top\nname=bar\ntop=t\n\n[server]\nport = 2\nip = 0.0.0.0\n\n[other]\nx:yy\n"
        "\n[a.b]\nc = d\n",
    ),
    (
        "ini: if_value needs the current value",
        "ini",
        "[s]\nk = v\n",
        [_r("s.k", "w", if_value="other"), _r("s.new", "w", if_value="v")],
        "[s]\nk = v\n",
    ),
    (
        "yaml: wildcards, regex if_value with groups, typed values, new nested keys",
        "yaml",
        "servers:\n  lobby:\n    address: localhost:25565\n  hub:\n    address: play.example:1\n"
        "listeners:\n- host: 0.0.0.0:25577\n  query_port: 25577\nplayer_limit: -1\n",
        [
            _r(
                "servers.*.address",
                "{{config.docker.interface}}$2",
                if_value="regex:^(127\\.0\\.0\\.1|localhost)(:\\d{1,5})?$",
            ),
            _r("listeners[0].host", "0.0.0.0:25565"),
            _r("listeners.*.query_port", "25565"),
            _r("player_limit", "20"),
            _r("online", True),
            _r("ratio", 1.5),
            _r("a.b.c", "0123"),
            _r("version", "1.20.4"),
        ],
        "servers:\n  lobby:\n    address: %s:25565\n  hub:\n    address: play.example:1\n"
        "listeners:\n- host: 0.0.0.0:25565\n  query_port: 25565\nplayer_limit: 20\n"
        "online: true\nratio: 1.5\na:\n  b:\n    c: 123\nversion: 1.20.4\n" % (INTERFACE,),
    ),
    (
        "yaml: plain if_value matches the current value's text, numbers included",
        "yaml",
        "port: 25565\nhost: 127.0.0.1\nflag: true\n",
        [
            _r("port", "30000", if_value=25565),
            _r("host", "0.0.0.0", if_value="localhost"),
            _r("flag", "false", if_value="true"),
            _r("missing.key", "x", if_value="y"),
        ],
        "port: 30000\nhost: 127.0.0.1\nflag: 'false'\n",
    ),
    (
        "yml: the alias of yaml; a wildcard at the end replaces every entry",
        "yml",
        "ports:\n  a: 1\n  b: 2\n",
        [_r("ports.*", "3")],
        "ports:\n  a: 3\n  b: 3\n",
    ),
    (
        "json: typed values, key order kept, 4-space indentation",
        "json",
        '{"b": 1, "a": {"x": "y", "list": [{"p": 1}, {"p": 2}]}}',
        [_r("a.x", "25"), _r("a.list.*.p", "{{config.docker.interface}}"), _r("b", False)],
        '{\n    "b": false,\n    "a": {\n        "x": 25,\n        "list": [\n            {\n'
        '                "p": "%s"\n            },\n            {\n                "p": "%s"\n'
        "            }\n        ]\n    }\n}\n" % (INTERFACE, INTERFACE),
    ),
    (
        "json: ~1 escapes a dot in a key; list indexes address elements",
        "json",
        '{"a.b": 1, "l": [1, 2]}',
        [_r("a~1b", "2"), _r("l.1", "3")],
        '{\n    "a.b": 2,\n    "l": [\n        1,\n        3\n    ]\n}\n',
    ),
    (
        "xml: text, attributes, created elements, wildcard with if_value",
        "xml",
        '<?xml version="1.0"?>\n<!-- hi -->\n<Settings>\n  <Port>1</Port>\n'
        '  <Name a="b">x</Name>\n</Settings>\n',
        [
            _r("Settings.Port", "25565"),
            _r("Settings.Name", "[a='c']"),
            _r("Settings.New.Deep", "v & <w>"),
            _r("Settings.*", "z", if_value="x"),
            _r("*.Missing", "never created"),
        ],
        '<?xml version="1.0" encoding="utf-8"?>\n<!-- hi -->\n<Settings>\n  <Port>25565</Port>\n'
        '  <Name a="c">z</Name>\n  <New>\n    <Deep>v &amp; &lt;w&gt;</Deep>\n  </New>\n'
        "</Settings>\n",
    ),
]


class ParserTests(_VolumeCase):
    """
    Each parser edits a real file in the volume as the table says.
    """

    def test_table(self) -> None:
        """
        Every case's file ends up with exactly the expected content and no error is reported.
        """
        for index, (name, parser, before, replacements, after) in enumerate(_PARSER_TABLE):
            path = "case%d/config.%s" % (index, parser)
            self.write(path, before)
            errors = self.apply(_entry(path, parser, *replacements))
            self.assertEqual(errors, [], name)
            self.assertEqual(self.read(path), after, name)
        self.assert_no_temporaries()

    def test_unchanged_file_is_not_rewritten(self) -> None:
        """
        When the replacements change nothing, the file (its inode) is left alone.
        """
        target = self.write("server.properties", "a=1\n")
        before = os.stat(target.path).st_ino
        self.assertEqual(self.apply(_entry("server.properties", "properties", _r("a", "1"))), [])
        self.assertEqual(os.stat(target.path).st_ino, before)

    def test_correct_values_keep_formatting(self) -> None:
        """
        YAML, JSON and XML documents whose values are already right keep their exact text
        (comments included), although rewriting them would normalise it; C{1} and C{true} are
        different values.
        """
        table = [
            ("yaml", "# comment\nport:   25565\nflag: yes\n", [_r("port", "25565"), _r("flag", True)]),
            ("json", '{"port":25565, "a":{"b":"c"}}', [_r("port", 25565), _r("a.b", "c")]),
            ("xml", "<a><b x='1'/><c>t</c></a>", [_r("a.b", "[x='1']"), _r("a.c", "t")]),
        ]
        for parser, content, replacements in table:
            path = "same." + parser
            self.write(path, content)
            self.assertEqual(self.apply(_entry(path, parser, *replacements)), [], parser)
            self.assertEqual(self.read(path), content, parser)
        self.write("one.yml", "a: 1\n")
        self.assertEqual(self.apply(_entry("one.yml", "yaml", _r("a", True))), [])
        self.assertEqual(self.read("one.yml"), "a: true\n")

    def test_mode_kept(self) -> None:
        """
        The rewritten file keeps its permission bits; a created file gets 0644.
        """
        target = self.write("config.yml", "a: 1\n")
        target.chmod(0o640)
        self.assertEqual(self.apply(_entry("config.yml", "yaml", _r("a", "2"))), [])
        self.assertEqual(stat.S_IMODE(os.stat(target.path).st_mode), 0o640)
        self.assertEqual(self.read("config.yml"), "a: 2\n")
        self.assertEqual(self.apply(_entry("new.yml", "yaml", _r("a", "2"))), [])
        new = self.root.child("new.yml").path
        self.assertEqual(stat.S_IMODE(os.stat(new).st_mode), 0o644)

    def test_bom_kept(self) -> None:
        """
        A UTF-8 byte order mark is stripped for parsing and written back.
        """
        self.write("a.json", b'\xef\xbb\xbf{"a": 1}')
        self.assertEqual(self.apply(_entry("a.json", "json", _r("a", "2"))), [])
        content = self.root.child("a.json").getContent()
        self.assertEqual(content, b'\xef\xbb\xbf{\n    "a": 2\n}\n')

    def test_entries_applied_in_order(self) -> None:
        """
        Two entries for one file are applied one after the other.
        """
        self.write("a.properties", "a=1\n")
        errors = self.apply(
            _entry("a.properties", "properties", _r("a", "2")),
            _entry("a.properties", "properties", _r("a", "3", if_value="2")),
        )
        self.assertEqual(errors, [])
        self.assertEqual(self.read("a.properties"), "a=3\n")

    def test_absolute_path_is_volume_relative(self) -> None:
        """
        A leading slash names the volume root, as upstream.
        """
        self.write("server.properties", "a=1\n")
        self.assertEqual(self.apply(_entry("/server.properties", "properties", _r("a", "2"))), [])
        self.assertEqual(self.read("server.properties"), "a=2\n")
        self.assert_outside_untouched()


class MissingFileTests(_VolumeCase):
    """
    A missing file is created (with its directories) by every parser but C{file}.
    """

    def test_created(self) -> None:
        """
        Each structured parser creates the file with the replacements applied.
        """
        table = {
            "properties": "server-port=25565\n",
            "ini": "[server]\nport = 25565\n",
            "yaml": "server:\n  port: 25565\n",
            "json": '{\n    "server": {\n        "port": 25565\n    }\n}\n',
            "xml": '<?xml version="1.0" encoding="utf-8"?>\n<server>\n  <port>25565</port>\n'
            "</server>\n",
        }
        for parser, expected in table.items():
            match = "server-port" if parser == "properties" else "server.port"
            path = "deep/dir/%s.cfg" % (parser,)
            errors = self.apply(_entry(path, parser, _r(match, "25565")))
            self.assertEqual(errors, [], parser)
            self.assertEqual(self.read(path), expected, parser)

    def test_file_parser_skips(self) -> None:
        """
        The C{file} parser leaves a missing file missing and reports nothing.
        """
        self.assertEqual(self.apply(_entry("dir/start.sh", "file", _r("a", "b"))), [])
        self.assertFalse(self.root.child("dir").exists())

    def test_conditional_only_creates_nothing(self) -> None:
        """
        When every replacement is conditional there is nothing to write: no file appears.
        """
        for parser in ("properties", "ini", "yaml", "json", "xml"):
            errors = self.apply(_entry("c." + parser, parser, _r("a.b", "1", if_value="0")))
            self.assertEqual(errors, [], parser)
            self.assertFalse(self.root.child("c." + parser).exists(), parser)


class RefusalTests(_VolumeCase):
    """
    Unsafe or unusable targets give one error line and change nothing.
    """

    def assert_refused(self, entry: dict[str, Any], fragment: str) -> None:
        errors = self.apply(entry)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn(fragment, errors[0])
        self.assert_outside_untouched()
        self.assert_no_temporaries()

    def test_dotdot(self) -> None:
        """
        A path with a C{..} component is refused before anything is touched.
        """
        self.assert_refused(_entry("../outside.txt", "file", _r("o", "x")), "inside")
        self.assert_refused(_entry("a/../../x.yml", "yaml", _r("o", "x")), "inside")
        self.assertEqual(self.root.listdir(), [])

    def test_final_symlink_out(self) -> None:
        """
        A symlink in place of the file is refused, its target is not written.
        """
        os.symlink(self.outside.path, self.root.child("server.properties").path)
        self.assert_refused(_entry("server.properties", "properties", _r("o", "x")), "symbolic")

    def test_intermediate_symlink_out(self) -> None:
        """
        Directories reached through links that leave the volume (absolute or relative) are
        refused, both for an existing target and one that would be created.
        """
        os.symlink(self.base.path, self.root.child("abs").path)
        os.symlink("../", self.root.child("rel").path)
        for link in ("abs", "rel"):
            for name in ("outside.txt", "new.yml"):
                self.assert_refused(_entry(link + "/" + name, "yaml", _r("o", "x")), "volume")

    def test_denylisted(self) -> None:
        """
        A file on the egg's denylist is not edited.
        """
        self.volume.set_denylist(["*.properties"])
        target = self.write("server.properties", "a=1\n")
        self.assert_refused(_entry("server.properties", "properties", _r("a", "2")), "denylist")
        self.assertEqual(target.getContent(), b"a=1\n")

    def test_directory(self) -> None:
        """
        A directory named like the file is refused and left as it is.
        """
        self.root.child("config.yml").makedirs()
        self.assert_refused(_entry("config.yml", "yaml", _r("a", "1")), "directory")
        self.assertTrue(self.root.child("config.yml").isdir())

    def test_fifo(self) -> None:
        """
        A FIFO is never opened.
        """
        os.mkfifo(self.root.child("pipe").path)
        self.assert_refused(_entry("pipe", "file", _r("a", "1")), "regular")

    def test_parent_is_a_file(self) -> None:
        """
        A path through a regular file is refused.
        """
        self.write("a", "x")
        self.assert_refused(_entry("a/b.json", "json", _r("a", "1")), "not a directory")

    def test_bad_content(self) -> None:
        """
        Invalid UTF-8, YAML, JSON (NaN included) or XML (a DTD, nesting beyond the limit) leave
        the file exactly as it was.
        """
        deep = "<a>" * (MAX_DEPTH + 1) + "</a>" * (MAX_DEPTH + 1)
        table = [
            ("properties", b"a=\xff\n", "UTF-8"),
            ("yaml", b"a: [1\n", "invalid YAML"),
            ("yaml", b"--- a\n--- b\n", "invalid YAML"),
            ("yaml", b"just a string\n", "top level"),
            ("yaml", b"[" * 100000, "invalid YAML"),
            ("json", b'{"a": 1', "invalid JSON"),
            ("json", b'{"a": NaN}', "invalid JSON"),
            ("json", b"[" * 100000, "invalid JSON"),
            ("xml", b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', "document type"),
            ("xml", b"<x>&undefined;</x>", "invalid XML"),
            ("xml", deep.encode(), "deeper"),
        ]
        for index, (parser, content, fragment) in enumerate(table):
            path = "bad%d.%s" % (index, parser)
            target = self.write(path, content)
            self.assert_refused(_entry(path, parser, _r("a", "2")), fragment)
            self.assertEqual(target.getContent(), content, path)

    def test_yaml_aliases_not_expanded(self) -> None:
        """
        A YAML alias bomb is neither expanded by a wildcard with C{if_value} nor by writing the
        document back.
        """
        lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
        for level in range(1, 9):
            lines.append("l%d: &l%d [%s]" % (level, level, ", ".join(["*l%d" % (level - 1,)] * 9)))
        content = "\n".join(lines) + "\n"
        self.write("bomb.yml", content)
        errors = self.apply(_entry("bomb.yml", "yaml", _r("*", "y", if_value="x"), _r("z", "1")))
        self.assertEqual(errors, [])
        self.assertLess(len(self.read("bomb.yml")), 4 * len(content))
        self.assertIn("z: 1", self.read("bomb.yml"))

    def test_error_lines_escaped(self) -> None:
        """
        Control characters in returned lines (here from the file name) are escaped.
        """
        errors = self.apply({"file": "a\nforged", "parser": "nope", "replace": []})
        self.assertEqual(len(errors), 1)
        self.assertNotIn("\n", errors[0])
        self.assertIn("a\\x0aforged", errors[0])

    def test_too_large(self) -> None:
        """
        A file over the size cap is not read at all.
        """
        target = self.write("big.properties", "a=1\n")
        os.truncate(target.path, MAX_FILE_SIZE + 1)
        self.assert_refused(_entry("big.properties", "properties", _r("a", "2")), "larger")
        self.assertEqual(os.stat(target.path).st_size, MAX_FILE_SIZE + 1)

    def test_failed_write_keeps_original(self) -> None:
        """
        When the write fails (here: the disk limit), the original file stays intact and no
        temporary file is left behind.
        """
        target = self.write("a.properties", "a=1\n")
        self.volume.set_disk_limit(-1)
        self.assert_refused(_entry("a.properties", "properties", _r("a", "2" * 100)), "disk")
        self.assertEqual(target.getContent(), b"a=1\n")


class ValidationTests(_VolumeCase):
    """
    Malformed input from the Panel is reported, never raised, and does not stop other files.
    """

    def test_malformed_entries(self) -> None:
        """
        Non-objects, missing or empty C{file}, unknown parsers and a C{replace} that is not a
        list each give one error; the valid entry after them is still applied.
        """
        self.write("ok.properties", "a=1\n")
        errors = self.apply(
            "nope",
            {"parser": "file", "replace": []},
            {"file": "", "parser": "file", "replace": []},
            {"file": "x", "parser": "toml", "replace": []},
            {"file": "x", "parser": None, "replace": []},
            {"file": "x", "parser": "file", "replace": {"a": 1}},
            _entry("ok.properties", "properties", _r("a", "2")),
        )
        self.assertEqual(len(errors), 6, errors)
        self.assertIn("configs[0]", errors[0])
        self.assertIn("unknown parser 'toml'", errors[3])
        self.assertEqual(self.read("ok.properties"), "a=2\n")

    def test_configs_not_a_list(self) -> None:
        """
        A C{configs} that is not a list is one error; C{None} is nothing to do.
        """
        self.assertEqual(len(apply_configs(self.volume, {"a": 1}, self.config)), 1)
        self.assertEqual(apply_configs(self.volume, None, self.config), [])

    def test_bad_replacements_skipped(self) -> None:
        """
        Bad replacements are reported one by one and the good ones are applied.
        """
        self.write("a.yml", "a: 1\nb: 2\n")
        errors = self.apply(
            _entry(
                "a.yml",
                "yaml",
                "not an object",
                {"match": "", "replace_with": "x"},
                {"match": "a", "replace_with": None},
                {"match": "a", "replace_with": {"x": 1}},
                {"match": "a", "if_value": "regex:(", "replace_with": "x"},
                {"match": "b", "value": "legacy"},
                _r("a.deeper", "x"),
            )
        )
        self.assertEqual(len(errors), 6, errors)
        self.assertIn("replace[0]", errors[0])
        self.assertIn("regular expression", errors[4])
        self.assertIn("a.deeper", errors[5])
        self.assertEqual(self.read("a.yml"), "a: 1\nb: legacy\n")

    def test_replacement_and_file_problems_both_reported(self) -> None:
        """
        A skipped replacement is still reported when the file itself then turns out unusable.
        """
        self.write("a.yml", "a: [\n")
        errors = self.apply(_entry("a.yml", "yaml", {"match": ""}, _r("a", "1")))
        self.assertEqual(len(errors), 2, errors)
        self.assertIn("replace[0]", errors[0])
        self.assertIn("invalid YAML", errors[1])

    def test_ini_line_break_refused(self) -> None:
        """
        An ini value with a line break would inject lines; it is skipped and reported.
        """
        self.write("a.ini", "[s]\nk = v\n")
        errors = self.apply(_entry("a.ini", "ini", _r("s.k", "x\n[admin]\ny = 1")))
        self.assertEqual(len(errors), 1)
        self.assertEqual(self.read("a.ini"), "[s]\nk = v\n")

    def test_xml_wrong_root(self) -> None:
        """
        An XML path whose first segment is not the root element is reported and creates nothing.
        """
        self.write("a.xml", "<a><b>1</b></a>")
        errors = self.apply(_entry("a.xml", "xml", _r("z.b", "2")))
        self.assertEqual(len(errors), 1)
        self.assertIn("<a>", errors[0])
        self.assertEqual(self.read("a.xml"), "<a><b>1</b></a>")


class ReplacementTests(SynchronousTestCase):
    """
    Decoding one replacement: placeholders and the typed value.
    """

    def test_placeholders(self) -> None:
        """
        Only the templatable paths resolve (each placeholder on its own); others, and secrets,
        stay as written.
        """
        config = _config()
        table = {
            "{{config.docker.interface}}": INTERFACE,
            "{{ config.docker.interface }}": INTERFACE,
            "{{config.docker.network.interface}}:{{config.docker.interface}}": INTERFACE
            + ":"
            + INTERFACE,
            "{{config.docker.Interface}}": INTERFACE,
            "{{config.token}}": "{{config.token}}",
            "{{config.docker.missing}}": "{{config.docker.missing}}",
            "{{server.build.default.port}}": "{{server.build.default.port}}",
        }
        for raw, expected in table.items():
            self.assertEqual(resolve_placeholders(raw, config), expected, raw)

    def test_typed(self) -> None:
        """
        Booleans and numbers keep their type; decimal integer strings in int64 range become
        integers; anything else stays text.
        """
        config = _config()
        table: list[tuple[Any, Any, str]] = [
            ("25565", 25565, "25565"),
            ("-1", -1, "-1"),
            ("0123", 123, "0123"),
            ("9223372036854775808", "9223372036854775808", "9223372036854775808"),
            ("1.5", "1.5", "1.5"),
            ("9" * 5000, "9" * 5000, "9" * 5000),
            ("true", "true", "true"),
            (True, True, "true"),
            (7, 7, "7"),
            (2.5, 2.5, "2.5"),
        ]
        for value, typed, text in table:
            replacement = parse_replacement({"match": "m", "replace_with": value}, config)
            self.assertEqual(replacement.typed, typed, value)
            self.assertIs(type(replacement.typed), type(typed), value)
            self.assertEqual(replacement.text, text, value)

    def test_match_and_if_value_text(self) -> None:
        """
        Numeric and boolean C{match}/C{if_value} are read as their text; an empty C{if_value}
        is unconditional.
        """
        config = _config()
        replacement = parse_replacement({"match": 25565, "if_value": True, "replace_with": "x"}, config)
        self.assertEqual((replacement.match, replacement.if_value), ("25565", "true"))
        replacement = parse_replacement({"match": "m", "if_value": "", "replace_with": "x"}, config)
        self.assertIsNone(replacement.if_value)

    def test_regex_template(self) -> None:
        """
        A C{regex:} if_value replaces every match using Go template references.
        """
        config = _config()
        table = [
            ("regex:(a)(b)?", "[$1|$2|${1}x|$1x|$$]", "ab-a", "[a|b|ax||$]-[a||ax||$]"),
            ("regex:(?P<n>\\d+)", "<${n}>", "v1.22", "v<1>.<22>"),
            ("regex:zzz", "x", "abc", None),
        ]
        for if_value, template, current, expected in table:
            replacement = parse_replacement(
                {"match": "m", "if_value": if_value, "replace_with": template}, config
            )
            outcome = replacement.outcome(current)
            self.assertEqual(outcome and outcome[0], expected, if_value)
        self.assertIsNone(replacement.outcome(None))
