"""The guarantee checker (issue 9): a seeded soak test on real processes.

Several gateways and workers, one redis-server and the demo agent run as real processes;
a fleet of WebSocket (v1, v2) and SSE clients follows new and old chats, drops and resumes
its connections at random and posts with and without ``clientMessageId`` while the fault
injector kills and restarts gateways, workers, Redis and the agent. At the end every socket's
frames are checked against the chat's log in Redis, every accepted message must have exactly
one reply and no job may be left behind; ``report`` prints what was done and what was found.

``python -m tests.guarantees [--long] [--seed N]`` runs it on demand; ``test_guarantees.py``
runs the short mode in the test command.
"""
