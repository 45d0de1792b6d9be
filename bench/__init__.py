"""Serving benchmark for issue 5: one workload, run against our server, our engine and the peers.

    .venv/bin/python -m bench --help

The modules that in-process workers import (``workload``, ``stats``, ``inprocess``) use the standard
library only, so the llama.cpp worker can run them from the peers' environment (``.venv-peers``), which
has neither httpx nor tgi_course's dependencies.
"""
