"""
Server transfers between nodes (transfers.md): this node as the source that pushes a server's
volume, and as the destination that receives it.

* `source`: ``POST /api/servers/{uuid}/transfer`` up to the 202 (§3.1);
* `outgoing`: the push, its failure and cancellation (§3.2–§3.7), as a state machine;
* `push`: the request body (``IBodyProducer``): multipart framing around the archive pipe, hashed
  as it is sent, with flow control and the stall timeout;
* `framing`: the byte-exact multipart layout (§3.4) and the ``Content-Type`` reader;
* `client`: the push's HTTP agent (§3.3);
* `progress`: the ``transfer logs`` lines (§6.2);
* `token`: the ``Authorization`` of ``POST /api/transfers`` and its JWT (§4.1);
* `receive`: the incoming transfer: registration, completion, failure and clean-up (§4.2–§4.8);
* `parts`: the body's parts, hash and checksums as they arrive (§4.3);
* `extraction`: the archive part extracted on a worker thread while it arrives (§4.4);
* `services`: the node's outgoing and incoming transfers, what the web routes call.

The HTTP side (routes, the body sink of ``POST /api/transfers``) is ``web.transfers``.
"""
