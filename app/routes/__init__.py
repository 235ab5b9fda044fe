"""HTTP routers, one per resource; thin: they resolve dependencies and call a service."""
