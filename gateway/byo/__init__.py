"""Bring your own model: visitors chat through their own provider key (docs/protocol.md 9.10).

``providers`` (the allow-list and presets), ``client`` (the streaming provider client),
``answer`` (streams one answer into the chat log), ``streams`` (concurrency and shutdown),
``routes`` (the HTTP routes). Nothing is imported here: ``gateway.settings`` imports
``providers`` alone.
"""
