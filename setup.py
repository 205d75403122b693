"""
Packaging for wings-twisted.  Packages are listed by hand so that the twistd
dropin in ``twisted/plugins`` is installed next to Twisted's own plugins.
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
        "wings_twisted.config",
        "wings_twisted.devpanel",
        "wings_twisted.eggconfig",
        "wings_twisted.environment",
        "wings_twisted.files",
        "wings_twisted.fs",
        "wings_twisted.servers",
        "wings_twisted.streams",
        "wings_twisted.web",
        "wings_twisted.websocket",
        "twisted.plugins",
    ],
    package_data={"twisted": ["plugins/wings_plugin.py"]},
    install_requires=[
        "twisted[tls]>=25.5.0",
        "autobahn>=24.4",
        "pyjwt>=2.8",
        "treq>=24.9",
        "service-identity>=24.1",
        "pyyaml>=6.0",
        "multipart>=1.2,<3",
        "psutil>=5.9",
        # zoneinfo falls back to it where the system has no zone database
        "tzdata",
        # archives: ISA-L deflate/inflate (the compress and decompress speed; zlib is the
        # fallback), Zstandard and 7-Zip extraction
        "isal>=1.6",
        "zstandard>=0.22",
        "py7zr>=0.22",
    ],
    extras_require={"test": ["hypothesis>=6.100"]},
)
