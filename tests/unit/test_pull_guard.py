"""
The pure halves of remote pulls: the SSRF guard's address rules
(``files.netguard``), the operator's ``allowed_networks`` entries
(``config.networks``, and their check when the file is loaded), and the URL
and file-name rules (``files.pullspec``).
"""

from __future__ import annotations

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.config import ConfigError
from wings_twisted.config.networks import parse_allowed_network
from wings_twisted.files.netguard import AddressPolicy, RefusedAddress, parse_address, refusal
from wings_twisted.files.pullspec import (BadDisposition, InvalidName, InvalidUrl,
                                          disposition_filename, parse_url, target_name)

from ..support import make_config

#: One address of every refused range, and forms of them an attacker may try.
REFUSED = [
    "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.254",
    "127.0.0.1", "127.255.255.254", "169.254.169.254", "172.16.0.1", "172.31.255.255",
    "192.168.0.1", "192.168.255.255", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255",
    "::", "::1", "::7f00:1", "fe80::1", "fe80::1%eth0", "fec0::1", "fc00::1", "fd12:3456::1",
    "ff02::1", "ff05::2", "64:ff9b:1::1",
    # IPv4-mapped, NAT64, 6to4 and Teredo forms of refused IPv4 addresses.
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0",
    "::ffff:100.64.0.1", "::ffff:192.168.1.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::1", "2002:c0a8:101::1", "2001:0:4136:e378:8000:63bf:f5ff:fffe",
]
#: Public addresses the guard lets through.
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0",
          "172.15.255.255", "172.32.0.0", "192.167.255.255", "223.255.255.255",
          "2606:2800:220:1:248:1893:25c8:1946", "2001:4860:4860::8888", "::ffff:8.8.8.8",
          "64:ff9b::808:808", "2002:808:808::1"]


class RefusalTests(SynchronousTestCase):
    """
    ``refusal``: the ranges no pull may reach.
    """

    def test_refused_ranges(self) -> None:
        """
        Loopback, private, link-local, unique-local, multicast, ``0.0.0.0/8``,
        ``100.64.0.0/10``, ``::``, the reserved range and the IPv4-mapped (and
        other embedded) forms of all of them are refused.
        """
        self.assertEqual([a for a in REFUSED if refusal(parse_address(a)) is None], [])

    def test_public_addresses(self) -> None:
        """
        Public addresses, right next to refused ranges included, pass.
        """
        self.assertEqual({a: refusal(parse_address(a)) for a in PUBLIC},
                         {a: None for a in PUBLIC})

    def test_mapped_form_names_the_inner_range(self) -> None:
        """
        The reason given for a mapped address is the IPv4 range inside it.
        """
        self.assertEqual(refusal(parse_address("::ffff:127.0.0.1")),
                         "loopback (inside an IPv6 address)")


class AddressPolicyTests(SynchronousTestCase):
    """
    ``AddressPolicy``: the guard with the operator's exceptions.
    """

    def test_default_refuses_internal(self) -> None:
        """
        Without entries every refused address raises ``RefusedAddress``
        naming its range, and public ones pass.
        """
        policy = AddressPolicy.from_config(())
        with self.assertRaises(RefusedAddress) as caught:
            policy.check("10.1.2.3", 80)
        self.assertEqual(caught.exception.reason, "private")
        policy.check("93.184.216.34", 80)

    def test_not_an_address(self) -> None:
        """
        Something that is not an IP address is refused, never guessed at.
        """
        with self.assertRaises(RefusedAddress):
            AddressPolicy().check("localhost", 80)

    def test_entry_with_port_opens_that_port_only(self) -> None:
        """
        ``127.0.0.1:8123`` opens that address on that port: another port,
        another loopback address and ``::1`` stay refused; the IPv4-mapped
        form of the address is the same address.
        """
        policy = AddressPolicy.from_config(["127.0.0.1:8123"])
        policy.check("127.0.0.1", 8123)
        policy.check("::ffff:127.0.0.1", 8123)
        for address, port in [("127.0.0.1", 8124), ("127.0.0.2", 8123), ("::1", 8123),
                              ("10.0.0.1", 8123)]:
            self.assertRaises(RefusedAddress, policy.check, address, port)

    def test_network_entry(self) -> None:
        """
        A CIDR entry without a port opens every address and port inside it,
        and nothing outside.
        """
        policy = AddressPolicy.from_config(["192.168.10.0/24", "[fd00::/8]:443"])
        policy.check("192.168.10.77", 21)
        policy.check("fd00::5", 443)
        self.assertRaises(RefusedAddress, policy.check, "192.168.11.1", 80)
        self.assertRaises(RefusedAddress, policy.check, "fd00::5", 80)


class AllowedNetworkTests(SynchronousTestCase):
    """
    ``parse_allowed_network`` and its check at load time.
    """

    def test_forms(self) -> None:
        """
        CIDRs, single addresses, ``:port`` for IPv4 and ``[...]:port`` for
        IPv6; host bits are allowed.
        """
        cases = {
            "10.1.2.3/8": ("10.0.0.0/8", None),
            "192.168.1.5": ("192.168.1.5/32", None),
            "192.168.1.0/24:8080": ("192.168.1.0/24", 8080),
            "2001:db8::7": ("2001:db8::7/128", None),
            "[2001:db8::7]:8080": ("2001:db8::7/128", 8080),
            "[fd00::/8]": ("fd00::/8", None),
        }
        for text, (network, port) in cases.items():
            entry = parse_allowed_network(text)
            self.assertEqual((str(entry.network), entry.port), (network, port), text)

    def test_bad_entries(self) -> None:
        """
        Names, bad prefixes and bad ports are refused with a message.
        """
        for text in ["lan-mirror.local", "10.0.0.0/33", "10.0.0.1:0", "10.0.0.1:x",
                     "[::1", "[::1]8080", "10.0.0.1:70000", ""]:
            self.assertRaises(ValueError, parse_allowed_network, text)

    def test_default_is_empty(self) -> None:
        """
        No network is allowed unless the operator says so.
        """
        config = make_config(FilePath(self.mktemp()))
        self.assertEqual(config.api.remote_download.allowed_networks, ())

    def test_bad_entry_stops_loading(self) -> None:
        """
        A bad entry is a ``ConfigError`` naming the key and the entry.
        """
        with self.assertRaises(ConfigError) as caught:
            make_config(FilePath(self.mktemp()),
                        api={"remote_download": {"allowed_networks": ["10.0.0.0/8", "nas"]}})
        self.assertIn("api.remote_download.allowed_networks[1]", str(caught.exception))
        self.assertIn("'nas'", str(caught.exception))


class UrlTests(SynchronousTestCase):
    """
    ``parse_url``.
    """

    def test_normalised(self) -> None:
        """
        The scheme and host are lower-cased, the default port filled in, the
        fragment dropped and unsafe characters escaped.
        """
        url = parse_url("HTTP://Files.Example/a b/c%20d.zip?x=1#top")
        self.assertEqual((url.scheme, url.host, url.port), ("http", "files.example", 80))
        self.assertEqual(url.uri, b"http://files.example/a%20b/c%20d.zip?x=1")
        self.assertEqual(url.path, "/a b/c d.zip")
        self.assertEqual(parse_url("https://files.example/").port, 443)

    def test_credentials_become_basic_auth(self) -> None:
        """
        A user and password leave the URL and become a Basic header.
        """
        url = parse_url("https://me:p%40ss@files.example:8443/x")
        self.assertEqual(url.uri, b"https://files.example:8443/x")
        self.assertEqual(url.authorization, b"Basic bWU6cEBzcw==")

    def test_literals_and_idna(self) -> None:
        """
        IP literals are recognised (brackets kept in the request URL only);
        international names are converted to ASCII.
        """
        url = parse_url("http://[::ffff:127.0.0.1]:81/f")
        self.assertEqual((url.host, url.is_literal, url.uri),
                         ("::ffff:127.0.0.1", True, b"http://[::ffff:127.0.0.1]:81/f"))
        self.assertFalse(parse_url("http://127.1/f").is_literal)
        self.assertEqual(parse_url("http://bücher.example/f").host, "xn--bcher-kva.example")

    def test_refused_urls(self) -> None:
        """
        Other schemes, no host, bad ports, bad escapes, control characters
        and zones fail with upstream's prefix.
        """
        for text in ["ftp://files.example/x", "file:///etc/passwd", "gopher://x/", "x",
                     "http:///x", "http://files.example:0/", "http://files.example:99999/",
                     "http://files.example:port/", "http://files.example/100%",
                     "http://files.example/a\nb", "http://[fe80::1%25eth0]/", "http://[::1/",
                     "http://a..b/", "http://a b/"]:
            with self.assertRaises(InvalidUrl, msg=text) as caught:
                parse_url(text)
            self.assertTrue(str(caught.exception).startswith(
                "An error occurred while parsing that URL: "), text)


class NameTests(SynchronousTestCase):
    """
    ``target_name`` and ``disposition_filename``.
    """

    def test_order(self) -> None:
        """
        The header's name wins, then ``file_name``, then the URL's last
        segment (decoded); a header without a name falls back.
        """
        url = parse_url("http://files.example/dir/pack%20v2.zip")
        self.assertEqual(target_name(url, "", None), "pack v2.zip")
        self.assertEqual(target_name(url, "mine.zip", None), "mine.zip")
        self.assertEqual(target_name(url, "mine.zip", 'attachment; filename="hdr.zip"'),
                         "hdr.zip")
        self.assertEqual(target_name(url, "mine.zip", "inline"), "mine.zip")

    def test_base_name_only(self) -> None:
        """
        Only what follows the last ``/`` is kept, from every source.
        """
        url = parse_url("http://files.example/x/y.zip")
        self.assertEqual(target_name(url, "../../etc/cron.d/evil", None), "evil")
        self.assertEqual(target_name(url, "", 'attachment; filename="../../.bashrc"'),
                         ".bashrc")
        self.assertEqual(target_name(parse_url("http://files.example/a%2F..%2Fb.txt"), "", None),
                         "b.txt")

    def test_unusable_names(self) -> None:
        """
        Empty, ``.``, ``..``, a trailing ``/`` and NUL are refused.
        """
        for url, file_name in [("http://files.example/", ""), ("http://files.example", ""),
                               ("http://files.example/x", "."), ("http://files.example/x", ".."),
                               ("http://files.example/x", "dir/"),
                               ("http://files.example/x", "a\x00b"),
                               ("http://files.example/dir/..", "")]:
            self.assertRaises(InvalidName, target_name, parse_url(url), file_name, None)

    def test_disposition_forms(self) -> None:
        """
        Quoted and token names, ``filename*`` over ``filename``, trailing
        ``;`` tolerated; malformed headers refused.
        """
        self.assertEqual(disposition_filename("attachment; filename=a.zip;"), "a.zip")
        self.assertEqual(disposition_filename('attachment; filename="a \\"b\\".zip"'),
                         'a "b".zip')
        self.assertEqual(disposition_filename(
            "attachment; filename=x.zip; filename*=UTF-8''%E2%82%AC.zip"), "\u20ac.zip")
        self.assertIsNone(disposition_filename("attachment"))
        for bad in ['attachment; filename="x', "attachment; filename", "; filename=a",
                    "attachment; filename=a; FILENAME=b", "attachment filename=a",
                    "attachment; filename*=latin2''x"]:
            self.assertRaises(BadDisposition, disposition_filename, bad)
