"""Scheduling for `make test` (pytest-xdist, `--dist loadgroup`): the three learning runs are most of pytest's time, so they
are collected first and grouped so that magnet_tiny's run and the lavt_tiny + sag_tiny runs start at once on different
workers, while every other test fills the gaps; started last, the longest run would leave one worker idle at the end."""


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: 0 if item.nodeid.startswith("tests/test_learning.py") else 1)   # stable: keeps the rest's order
