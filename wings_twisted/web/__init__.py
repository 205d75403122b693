"""
The HTTP API: resource tree, request handling, streaming bodies.
"""
