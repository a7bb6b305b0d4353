"""/openapi.json, /docs and /redoc behind the same key as the routes they describe, working offline.

FastAPI serves its own copies without any check and loads Swagger UI and ReDoc from a CDN, so a
machine without internet gets a blank page: `create_app` turns those off and these take their place,
with the assets served from the installed `fastapi-offline` package. The assets are the public files
of those two projects, so they are served without a key.
"""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from server.api.auth import require_reader
from server.errors import NotFound

OPENAPI_URL = "/openapi.json"
ASSETS_URL = "/docs/assets"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
router = APIRouter(dependencies=[Depends(require_reader)], include_in_schema=False)
assets = APIRouter(include_in_schema=False)


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(without_fastapi_422(request.app.openapi()))


def without_fastapi_422(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI describes a 422 `HTTPValidationError` on every route with a body or a path parameter; this API
    answers those with 400 and API.md's error body, which each route declares (server/api/responses.py)."""
    for path in document["paths"].values():
        for operation in path.values():
            if "HTTPValidationError" in json.dumps(operation.get("responses", {}).get("422", {})):
                del operation["responses"]["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        document.get("components", {}).get("schemas", {}).pop(name, None)
    return document


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL, title=f"{request.app.title} - docs",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
    )  # fmt: skip


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=OPENAPI_URL, title=f"{request.app.title} - ReDoc", redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_URL}/favicon.png", with_google_fonts=False,
    )  # fmt: skip


@assets.get(f"{ASSETS_URL}/{{name}}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:  # only the named files: a name never becomes a path of its own
        raise NotFound(f"no asset {name!r}; the docs use {', '.join(ASSETS)}")
    path = importlib.resources.files("fastapi_offline") / "static" / name
    return FileResponse(str(path), media_type=ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})
