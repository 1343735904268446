"""The console at /ui (CONTRACT §8): pages for an operator or an auditor, rendered on the server.

`router` holds the pages (ledger/api/console/pages.py); `ConsoleSession` lets a browser hold its token
(ledger/api/console/session.py). The app factory (ledger/api/app.py) mounts both.
"""

from ledger.api.console.pages import router
from ledger.api.console.session import ConsoleSession

__all__ = ["ConsoleSession", "router"]
