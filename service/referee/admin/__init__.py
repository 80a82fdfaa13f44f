"""The admin API: live scorer reloads and config applies without a restart, guarded by
their own keys (``server.admin_api_keys``). ``reload`` holds the operations; ``routes``
is the HTTP face (the gRPC servicer and SIGHUP call the same ``Reloader``)."""

from referee.admin.reload import Reloader

__all__ = ["Reloader"]
