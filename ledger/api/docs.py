"""`/docs`: Swagger UI on the service's own OpenAPI document, every asset served by the service.

FastAPI's default page loads Swagger UI from a CDN, so it is blank on a machine without the
internet (issue #13). The few files it needs ship inside the package (ledger/api/static/swagger-ui,
with their licence) and are served under `/docs/assets/`, an open path like `/docs` itself
(CONTRACT §5: the documentation needs no token). Only the files named here are served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from ledger.api.problems import Problem, problem_response

DOCS_PATH = "/docs"
ASSETS_PREFIX = "/docs/assets/"
ASSETS_DIR = Path(__file__).resolve().parent / "static" / "swagger-ui"
SWAGGER_UI_VERSION = "5.32.0"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
# The assets change only with the package: a browser may keep them a day.
ASSETS_MAX_AGE_S = 86_400
# What Swagger UI is told beyond FastAPI's defaults: no validator badge (it would ask
# validator.swagger.io about the document), and the token typed into "Authorize" kept across reloads.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None, "persistAuthorization": True}


def install_docs(app: FastAPI, title: str, openapi_url: str = "/openapi.json") -> None:
    """Adds `/docs` and its assets to an app created with `docs_url=None`."""

    async def docs(_: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{ASSETS_PREFIX}swagger-ui-bundle.js?v={SWAGGER_UI_VERSION}",
            swagger_css_url=f"{ASSETS_PREFIX}swagger-ui.css?v={SWAGGER_UI_VERSION}",
            swagger_favicon_url=f"{ASSETS_PREFIX}favicon-32x32.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        media_type = ASSETS.get(name)
        if media_type is None:
            missing = Problem(404, "not-found", "Not found", f"no asset named {name!r} in the documentation")
            return problem_response(missing, request.url.path)
        return FileResponse(
            ASSETS_DIR / name,
            media_type=media_type,
            headers={"Cache-Control": f"public, max-age={ASSETS_MAX_AGE_S}"},
        )

    app.add_route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False)
    app.add_route(f"{ASSETS_PREFIX}{{name}}", asset, methods=["GET"], include_in_schema=False)
