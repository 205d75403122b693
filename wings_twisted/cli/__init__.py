"""
The ``wings`` command, with upstream Wings' verbs and flags (config.md §8):

``wings [--config PATH] [--debug] [--ignore-certificate-errors]``
    Run the daemon in the foreground: the same service as ``twistd -n
    wings`` (``tap.daemon_service``), with the console log on standard
    output and ``wings.log`` in ``system.log_directory``.
``wings --version``, ``wings version``
    Print ``wings-twisted <version>``.
``wings configure --panel-url URL --token KEY --node ID [--config-path PATH]
[--override] [--allow-insecure]``
    Fetch the node's configuration from the Panel's application API and
    write it (``cli.configure``): the Panel's "Auto-Deploy" command.
``wings diagnostics [--output FILE] [--log-lines N] [--include-endpoints]
[--no-logs] [--hastebin-url URL]``
    A report for a support channel (``cli.diagnostics``), secrets redacted,
    uploaded only when a URL is given.

Differences from upstream: no interactive prompts (a missing flag is an
error, an existing file needs ``--override``); ``--auto-tls`` is refused
(use certificates in ``api.ssl``); the Go profiler flags ``--pprof``,
``--pprof-port`` and ``--pprof-block-rate`` are accepted and ignored;
``--listen`` overrides the API listener (tests).  ``-c``/``--config-path``
and ``--config`` name the same file for ``configure`` (upstream checks one
and writes the other).

Usage errors and failures end with one line on standard error and a
non-zero status; the command's own results go to standard output.

Modules: ``main`` (the parser and the dispatch), ``daemon``, ``configure``,
``diagnostics``; this package holds :class:`CommandError`, which they share.
"""

from __future__ import annotations


class CommandError(Exception):
    """
    A failure the command reports as one line (``wings: <message>``),
    exit status 1.
    """
