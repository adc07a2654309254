"""The control API: a ZeroMQ ROUTER loop (`server.py`) and one table of handlers (`handlers.py`)."""
