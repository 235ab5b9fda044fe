"""sleepd: shared pieces of the product (settings, CLI, Redis keys, session records, model preparation).

The three parts live beside this package: `app/` (the Wake server), `worker/` (Celery, Sleep) and
`consolidation/` (the learning algorithms, a library). See docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"
