"""``cmdlog up``: the platform's processes (Postgres, Prefect server, served deployments, web app) and their
supervision."""

