"""
Moving bytes between files and connections, with nothing HTTP-specific:
``producers`` (a span of an open file -> any consumer) and ``spool`` (a
stream of chunks -> files written on a worker thread, with back-pressure on
whoever feeds it).
"""
