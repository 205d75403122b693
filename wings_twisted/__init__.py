"""
wings-twisted: the Pterodactyl node daemon ("Wings") on Twisted.
"""

__version__ = "0.1.0"
