"""The learning algorithms of a sleep cycle (Knowledge Seeding, Dreaming, the publish gate), as a library that
imports neither FastAPI, Celery nor Redis. Empty until the Sleep issue lands."""
