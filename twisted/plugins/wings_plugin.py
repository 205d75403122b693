"""
The twistd dropin: ``twistd wings --config PATH``.
"""

from twisted.application.service import ServiceMaker

wings = ServiceMaker(
    "wings-twisted",
    "wings_twisted.tap",
    "The Pterodactyl node daemon (Wings) on Twisted.",
    "wings",
)
