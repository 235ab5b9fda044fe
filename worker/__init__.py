"""Sleep operations: the Celery app and tasks that run consolidation in low-traffic windows (see issue "Sleep
operations"). Empty until then; the server runs without it."""
