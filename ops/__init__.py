"""``terrarium-ops``: the operators' console (list, show, follow and export chats; inspect
jobs and dead letters; requeue one; replay a visitor message against the agent, dry).

It talks to Redis only through :mod:`bus.ops` and reads ``REDIS_URL``, ``REDIS_KEY_PREFIX``
and the TLS files like every other process (see :mod:`ops.settings`).
"""
