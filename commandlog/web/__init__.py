"""The commandlog web app (FastAPI): ``create_app`` in ``app.py``, bearer-token auth in ``auth.py``."""
