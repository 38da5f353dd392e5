"""The Subscription notification service and synchronous HTTP API (`facet-adapter serve`).

- `queue`: the durable SQLite job queue (no loss, no duplicate jobs, retries, dead letters).
- `notifications`: HAPI rest-hook and Subscriptions Backport notifications → queue entries.
- `worker`: the background thread that works the queue; `handler`: what a job does (sync).
- `app`: the FastAPI application (`create_app(Settings)`); `web`: bodies, limits, FHIR answers.
- `cli`: `facet-adapter serve` and `facet-adapter queue list|retry`.
"""
