"""The `sleepd` command (typer): the top floor. It starts and drives every layer (the server in app/, the
Celery worker and scheduler in worker/, offline sleeps in consolidation/), so it sits above them; the shared
package sleepd/ imports none of them."""
