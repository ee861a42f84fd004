"""The API docs page (``/docs``, Swagger UI) served with no CDN: it works offline.

FastAPI's default pages load Swagger UI and ReDoc from jsdelivr, so without internet ``/docs`` is blank. This is
FastAPI's documented recipe for self-hosting them (https://fastapi.tiangolo.com/how-to/custom-docs-ui-assets/):
the app is built with ``docs_url=None, redoc_url=None`` and ``install`` adds the page, pointing at the assets of
the ``fastapi-offline`` wheel (Swagger UI 5, kept current by that package; Swagger UI 4, as shipped by
``swagger-ui-bundle``, cannot render the OpenAPI 3.1 documents FastAPI writes) under a StaticFiles mount.
``/redoc`` is off: ReDoc 2 still fetches its footer logo from cdn.redoc.ly, and one docs page is enough.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/static/docs"
"""Where the Swagger UI assets are served."""


def install(app: FastAPI, *, docs_url: str = "/docs") -> None:
    """Add ``docs_url`` (Swagger UI) to ``app``, its assets served by the app itself."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
    oauth2_redirect_url = f"{docs_url}/oauth2-redirect"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} — API docs",
                                   oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
                                   swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                                   swagger_ui_parameters=app.swagger_ui_parameters)

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
