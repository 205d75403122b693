"""
Moving bytes between files and connections, with nothing HTTP-specific:
``producers`` (a span of an open file -> any consumer), ``spool`` (a
stream of chunks -> files written on a worker thread, with back-pressure on
whoever feeds it) and ``pipe`` (bytes made by blocking code on a worker
thread -> any consumer, with back-pressure on the worker).
"""
