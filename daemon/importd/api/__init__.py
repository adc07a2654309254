"""The control API: a ZeroMQ ROUTER loop (`server.py`), one table from method to handler
(`table.py`), the handlers by area (`files.py`, `entities.py`, `media.py`, `maintenance.py`), each
a function of the core (`importd/core.py`) and the params, and the live events (`events.py`)."""
