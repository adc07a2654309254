"""The benchmark harness behind `make bench` (`python -m bench`).

`core` measures the daemon against find/b3sum on trees it generates (issue 2's targets);
`media` and `entities` are further sections; `report` turns figures into a table and JSON.
"""

from bench.report import Check, Target

__all__ = ["Check", "Target"]
