"""
The servers of this node: the model (``server``), the registry, the
occupancy state machine, the environment's listener (``runtime``) and what
happens to a server over time (``lifecycle``, ``install``, ``crash``), the
console pipeline and event bus the websocket forwards, and ``states.json``
(``store``).  ``build.build_server`` assembles one server.

The package depends on the ground layer (``fs``, ``config``, ``panel``,
``blocking``), on ``environment`` and ``eggconfig``; it never imports the
node, the web layer or the websocket.
"""
