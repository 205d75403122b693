"""
The console websocket ``/api/servers/{uuid}/ws`` (websocket.md).
"""
