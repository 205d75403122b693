"""
The embedded SFTP server for players (``sftp.md``), on Twisted Conch.

* `service`: the listener, started after boot by the composition root;
* `hostkey`: ``<system.data>/.sftp/id_ed25519``, reused unchanged or generated;
* `transport`: the SSH factory, transport (algorithms, grace time, per-IP limit) and connection;
* `auth`: logins checked by the panel (``POST /api/remote/sftp/auth``);
* `session`: the realm, the connection's avatar and its session channels;
* `protocol`: the SFTP wire protocol, robust against bad input and bounded;
* `filesystem` and `files`: the operations and open handles, on the server's sandboxed volume
  (``wings_twisted.fs``) in worker threads, behind the permission rules;
* `errors`: the status of every error.

A feature package: it may use the node, the server model, ``fs``, the panel client and ``auth``,
never the web layer.
"""
