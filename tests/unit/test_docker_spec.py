"""
Tests for the pure parts of the Docker environment: the container and
installer documents (lifecycle.md §20.1, §16.3), image references and
registry credentials (§20.3), the node network (§20.4), the stats formulas
(§13.2), engine timestamps, and the attach stream's HTTP and framing.
"""

from __future__ import annotations

import base64
import json
import struct

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from wings_twisted.environment import EnvironmentSettings, Limits
from wings_twisted.environment.docker import DockerError
from wings_twisted.environment.docker.attach import AttachStream, Demultiplexer, demultiplex
from wings_twisted.environment.docker.engine import parse_timestamp
from wings_twisted.environment.docker.network import adjusted_view, network_document
from wings_twisted.environment.docker.spec import (NetworkView, installer_container,
                                                   libpod_resources, outgoing_network_name,
                                                   registry_auth, resources, server_container,
                                                   split_image)
from wings_twisted.environment.docker.stats import sample

from ..support import make_config

UUID = "8f2a0c1e-3b4d-4e5f-9a6b-7c8d9e0f1a2b"
VIEW = NetworkView("172.18.0.1", False, "pterodactyl_nw")


def settings(**changes: object) -> EnvironmentSettings:
    values: dict[str, object] = dict(
        uuid=UUID, volume="/var/lib/pterodactyl/volumes/" + UUID, image="~ghcr.io/yolk:java",
        env=(("TZ", "UTC"), ("SERVER_IP", "127.0.0.1"), ("SERVER_PORT", "25565")),
        limits=Limits(memory_limit=1024, swap=0, io_weight=500, cpu_limit=150, threads="0-1",
                      oom_disabled=False),
        uid=988, gid=988,
        allocations={"default": {"ip": "127.0.0.1", "port": 25565},
                     "mappings": {"127.0.0.1": [25565, 70000], "10.0.0.5": [25566]}},
        mounts=({"source": "/srv/maps/", "target": "/maps", "read_only": True},
                {"source": "/etc", "target": "/host-etc"}),
        labels={"game": "mc"})
    values.update(changes)
    return EnvironmentSettings(**values)  # type: ignore[arg-type]


class ServerContainerTests(SynchronousTestCase):
    """
    The server container document (§20.1).
    """

    def setUp(self) -> None:
        base = FilePath(self.mktemp())
        self.config = make_config(base, allowed_mounts=["/srv"],
                                  docker={"tmpfs_size": 50, "domainname": "example.test"})

    def test_document(self) -> None:
        """
        Name-level fields, TTY and stdin, labels, env rewrite, limits with
        the overhead in decimal MB, ports on TCP and UDP with the interface,
        the volume, /etc/timezone, allowed mounts only, the hardening.
        """
        body, skipped = server_container(settings(), self.config, VIEW, timezone_file=True)
        host = body["HostConfig"]
        self.assertEqual((body["Hostname"], body["Domainname"], body["User"], body["Image"]),
                         (UUID, "example.test", "988:988", "ghcr.io/yolk:java"))
        self.assertTrue(body["Tty"] and body["OpenStdin"] and body["AttachStdin"])
        self.assertEqual(body["Labels"], {"game": "mc", "Service": "Pterodactyl",
                                          "ContainerType": "server_process"})
        self.assertIn("SERVER_IP=172.18.0.1", body["Env"])
        self.assertEqual(host["Memory"], 1_177_600_000)          # 1024 × 1.15 MB
        self.assertEqual(host["MemoryReservation"], 1_024_000_000)
        self.assertEqual(host["MemorySwap"], 1_177_600_000)
        self.assertEqual((host["CpuQuota"], host["CpuPeriod"], host["CpuShares"]),
                         (150_000, 100_000, 1024))
        self.assertEqual((host["CpusetCpus"], host["BlkioWeight"], host["PidsLimit"]),
                         ("0-1", 500, 512))
        self.assertFalse(host["OomKillDisable"])
        self.assertEqual(set(body["ExposedPorts"]), {"25565/tcp", "25565/udp", "25566/tcp",
                                                     "25566/udp"})
        self.assertEqual(host["PortBindings"]["25565/udp"],
                         [{"HostIp": "172.18.0.1", "HostPort": "25565"}])
        self.assertEqual(host["PortBindings"]["25566/tcp"],
                         [{"HostIp": "10.0.0.5", "HostPort": "25566"}])
        self.assertEqual([(m["Source"], m["Target"], m["ReadOnly"]) for m in host["Mounts"]],
                         [(settings().volume, "/home/container", False),
                          ("/etc/timezone", "/etc/timezone", True),
                          ("/srv/maps", "/maps", True)])
        self.assertEqual(skipped, ["/etc"])
        self.assertEqual(host["Tmpfs"], {"/tmp": "rw,exec,nosuid,size=50M"})
        self.assertEqual((host["NetworkMode"], host["Dns"]), ("pterodactyl_nw",
                                                               ["1.1.1.1", "1.0.0.1"]))
        self.assertEqual(host["LogConfig"]["Type"], "local")
        self.assertTrue(host["ReadonlyRootfs"])
        self.assertEqual(host["SecurityOpt"], ["no-new-privileges"])
        self.assertIn("net_raw", host["CapDrop"])
        self.assertNotIn("Ulimits", host)

    def test_ispn_drops_loopback_bindings(self) -> None:
        """
        In ISPN mode a ``127.0.0.1`` allocation is exposed but not bound.
        """
        body, _ = server_container(settings(), self.config, NetworkView("", True, "x"),
                                   timezone_file=False)
        self.assertNotIn("25565/tcp", body["HostConfig"]["PortBindings"])
        self.assertIn("25565/tcp", body["ExposedPorts"])
        self.assertEqual(len(body["HostConfig"]["Mounts"]), 2)

    def test_unlimited_and_swap_rules(self) -> None:
        """
        Memory 0 is unlimited; swap −1 is unlimited; CPU 0 sets no quota.
        """
        document = resources(Limits(memory_limit=0, swap=-1, cpu_limit=0), self.config)
        self.assertEqual((document["Memory"], document["MemorySwap"]), (0, -1))
        self.assertNotIn("CpuQuota", document)
        document = resources(Limits(memory_limit=3000, swap=500), self.config)
        self.assertEqual(document["Memory"], 3_300_000_000)      # 1.10 up to 4096 MB
        self.assertEqual(document["MemorySwap"], 3_800_000_000)

    def test_rootless_user(self) -> None:
        """
        Rootless mode runs containers as the configured container ids.
        """
        config = make_config(FilePath(self.mktemp()), system={
            "user": {"rootless": {"enabled": True, "container_uid": 1000,
                                  "container_gid": 1001}}})
        body, _ = server_container(settings(), config, VIEW, timezone_file=False)
        self.assertEqual(body["User"], "1000:1001")

    def test_libpod_resources(self) -> None:
        """
        The same limits as podman's ``LinuxResources``.
        """
        document = libpod_resources(resources(settings().limits, self.config))
        self.assertEqual(document["memory"]["limit"], 1_177_600_000)
        self.assertEqual(document["cpu"], {"quota": 150_000, "period": 100_000,
                                           "shares": 1024, "cpus": "0-1"})
        self.assertEqual(document["pids"], {"limit": 512})


class InstallerContainerTests(SynchronousTestCase):
    """
    The installer document (§16.3).
    """

    def test_document(self) -> None:
        """
        Named by the caller, hostname ``installer``, the entrypoint and
        script as command, volume and script mounts, at least the installer
        memory, no pid limit, no user, the installer labels.
        """
        config = make_config(FilePath(self.mktemp()))
        body = installer_container(settings(limits=Limits(memory_limit=512, cpu_limit=50)),
                                   config, VIEW, image="ghcr.io/installers:alpine",
                                   entrypoint="ash", script_directory="/tmp/p/" + UUID,
                                   env=(("A", "1"),))
        host = body["HostConfig"]
        self.assertEqual(body["Hostname"], "installer")
        self.assertEqual(body["Cmd"], ["ash", "/mnt/install/install.sh"])
        self.assertNotIn("User", body)
        self.assertEqual(body["Env"], ["A=1"])
        self.assertEqual(body["Labels"]["ContainerType"], "server_installer")
        self.assertEqual([m["Target"] for m in host["Mounts"]], ["/mnt/server", "/mnt/install"])
        self.assertEqual(host["Memory"], 1_177_600_000)   # max(512, 1024) × 1.15
        self.assertEqual(host["CpuQuota"], 100_000)       # max(50, 100) %
        self.assertNotIn("PidsLimit", host)


class ImageTests(SynchronousTestCase):
    """
    Image references and registry credentials (§20.3).
    """

    def test_split(self) -> None:
        """
        The tag follows the last colon after the last slash; ``latest``
        otherwise; a registry port is not a tag; ``~`` is dropped.
        """
        self.assertEqual(split_image("busybox"), ("busybox", "latest"))
        self.assertEqual(split_image("~ghcr.io/a/b:java_17"), ("ghcr.io/a/b", "java_17"))
        self.assertEqual(split_image("127.0.0.1:5000/wings/busybox"),
                         ("127.0.0.1:5000/wings/busybox", "latest"))
        self.assertEqual(split_image("x/y@sha256:abc"), ("x/y@sha256:abc", ""))

    def test_registry_auth_by_prefix(self) -> None:
        """
        The first registry whose key prefixes the image gives base64url
        JSON credentials; other images get none.
        """
        config = make_config(FilePath(self.mktemp()), docker={"registries": {
            "registry.test": {"username": "u", "password": "p?>"}}})
        header = registry_auth("registry.test/game:1", config)
        assert header is not None
        document = json.loads(base64.urlsafe_b64decode(header))
        self.assertEqual(document, {"username": "u", "password": "p?>",
                                    "serveraddress": "registry.test"})
        self.assertIsNone(registry_auth("ghcr.io/game:1", config))


class NetworkTests(SynchronousTestCase):
    """
    The node network (§20.4) and per-IP networks (§20.2).
    """

    def test_document_and_views(self) -> None:
        """
        The create body carries the subnets and bridge options; the driver
        decides the interface and ISPN.
        """
        config = make_config(FilePath(self.mktemp()))
        document = network_document(config)
        self.assertEqual(document["Name"], "pterodactyl_nw")
        self.assertEqual(document["IPAM"]["Config"][0], {"Subnet": "172.18.0.0/16",
                                                         "Gateway": "172.18.0.1"})
        self.assertEqual(document["Options"]["com.docker.network.bridge.name"], "pterodactyl0")
        self.assertEqual(adjusted_view(config, "host", False).interface, "127.0.0.1")
        self.assertTrue(adjusted_view(config, "overlay", False).ispn)
        self.assertEqual(adjusted_view(config, "bridge", True).interface, "172.18.0.1")
        self.assertEqual(outgoing_network_name("10.0.0.5"), "ip-10-0-0-5")


class StatsTests(SynchronousTestCase):
    """
    The formulas of §13.2.
    """

    def test_cgroup_v1_document(self) -> None:
        """
        Memory less ``total_inactive_file``; CPU share × online CPUs;
        network summed.
        """
        document = {
            "memory_stats": {"usage": 10_000, "limit": 50_000,
                             "stats": {"total_inactive_file": 4_000}},
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000}, "system_cpu_usage": 20_000,
                          "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000}, "system_cpu_usage": 10_000},
            "networks": {"eth0": {"rx_bytes": 5, "tx_bytes": 7},
                         "eth1": {"rx_bytes": 1, "tx_bytes": 1}},
        }
        self.assertEqual(sample(document, uptime_ms=9), {
            "memory_bytes": 6_000, "memory_limit_bytes": 50_000, "cpu_absolute": 40.0,
            "network": {"rx_bytes": 6, "tx_bytes": 8}, "uptime": 9})

    def test_cgroup_v2_and_percpu(self) -> None:
        """
        ``inactive_file`` (v2); without ``online_cpus`` the per-CPU list
        counts; an inactive figure above usage is ignored.
        """
        document = {
            "memory_stats": {"usage": 10_000, "stats": {"inactive_file": 1_000}},
            "cpu_stats": {"cpu_usage": {"total_usage": 2_000, "percpu_usage": [1, 1, 1, 1]},
                          "system_cpu_usage": 30_000},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000}, "system_cpu_usage": 20_000},
        }
        result = sample(document, uptime_ms=0)
        self.assertEqual((result["memory_bytes"], result["cpu_absolute"]), (9_000, 40.0))
        document["memory_stats"] = {"usage": 100, "stats": {"inactive_file": 500}}
        self.assertEqual(sample(document, uptime_ms=0)["memory_bytes"], 100)

    def test_no_delta(self) -> None:
        """
        The first sample of a stream (no previous CPU figures) is 0 %.
        """
        self.assertEqual(sample({"cpu_stats": {"cpu_usage": {"total_usage": 5}}},
                                uptime_ms=0)["cpu_absolute"], 0.0)

    def test_timestamps(self) -> None:
        """
        RFC 3339 with nanoseconds parses; Go's zero time does not.
        """
        self.assertAlmostEqual(parse_timestamp("2026-01-01T00:00:10.5Z") or 0, 1767225610.5)
        self.assertIsNone(parse_timestamp("0001-01-01T00:00:00Z"))
        self.assertIsNone(parse_timestamp(None))


class AttachStreamTests(SynchronousTestCase):
    """
    The hijacked attach connection.
    """

    def connect(self, *, tty: bool = True) -> tuple[AttachStream, StringTransport, list[bytes]]:
        out: list[bytes] = []
        stream = AttachStream(b"POST /x HTTP/1.1\r\n\r\n", out.append, tty=tty, what="attach")
        transport = StringTransport()
        stream.makeConnection(transport)
        return stream, transport, out

    def test_upgrade_then_raw_both_ways(self) -> None:
        """
        The request is written; a 101 head (in pieces) switches to raw
        mode; bytes after the head are output; writes go to stdin.
        """
        stream, transport, out = self.connect()
        self.assertEqual(transport.value(), b"POST /x HTTP/1.1\r\n\r\n")
        stream.dataReceived(b"HTTP/1.1 101 UPGRADED\r\nUpgrade: tc")
        self.assertNoResult(stream.upgraded)
        stream.dataReceived(b"p\r\n\r\nhello\r\n")
        self.successResultOf(stream.upgraded)
        self.assertEqual(out, [b"hello\r\n"])
        stream.write(b"list\n")
        self.assertTrue(transport.value().endswith(b"list\n"))
        stream.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stream.ended)
        self.assertRaises(DockerError, stream.write, b"x")

    def test_refusal(self) -> None:
        """
        A non-101 answer is a ``DockerError`` with the engine's message.
        """
        stream, _, _ = self.connect()
        stream.dataReceived(b'HTTP/1.1 409 Conflict\r\nContent-Length: 24\r\n\r\n'
                            b'{"message":"is paused"}\n')
        failure = self.failureResultOf(stream.upgraded, DockerError)
        self.assertEqual(failure.value.status, 409)
        self.assertIn("is paused", failure.value.message)

    def test_closed_before_answer(self) -> None:
        """
        A connection dropped before any answer fails ``upgraded``.
        """
        stream, _, _ = self.connect()
        stream.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(stream.upgraded, DockerError)

    def test_multiplexed_without_tty(self) -> None:
        """
        Without a TTY the 8-byte frame headers are stripped, frames split
        anywhere.
        """
        stream, _, out = self.connect(tty=False)
        frames = (struct.pack(">BxxxL", 1, 3) + b"out" + struct.pack(">BxxxL", 2, 4) + b"err\n")
        stream.dataReceived(b"HTTP/1.1 101 UPGRADED\r\n\r\n" + frames[:5])
        stream.dataReceived(frames[5:])
        self.assertEqual(b"".join(out), b"outerr\n")
        self.assertEqual(demultiplex(frames), b"outerr\n")
        pieces: list[bytes] = []
        Demultiplexer(pieces.append).feed(struct.pack(">BxxxL", 1, 0))
        self.assertEqual(pieces, [])
