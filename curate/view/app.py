"""The Starlette app behind `curate view`: four pages, the catalog's media, the review API.

Everything it sends is its own (templates/, static/: no CDN, no web font), every text
from the data is escaped by Jinja2's autoescape, and a link taken from the data is kept
only when it is http(s). On loopback (the default) pages are open to the machine's own
browser and the Host header must be loopback (no DNS rebinding); a review needs the
page's token in a header, so another site cannot post one. Served on another interface
(``--host``), every request needs the token (the printed URL carries it once, then a
cookie does)."""

from __future__ import annotations

import hmac
import json
import math
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..catalog import reviews
from . import pages
from .data import BadQuery, CatalogData
from .media import PLAYABLE, media_type, resolve_media

HERE = Path(__file__).resolve().parent
TOKEN_COOKIE = "curate_view_token"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=jinja2.select_autoescape(["html"], default=True),
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.filters["href"] = safe_href
    env.filters["media"] = lambda rel: "/media/" + urllib.parse.quote(rel or "")
    env.filters["q"] = lambda text: urllib.parse.quote(str(text), safe="")
    env.filters["when"] = _when
    return env


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _when(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, timezone.utc)
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return str(value)[:19].replace("T", " ")


def safe_href(url) -> str | None:
    """A URL from the data as a link target: http(s) only (a ``javascript:`` URL never is)."""
    if not isinstance(url, str):
        return None
    try:
        scheme = urllib.parse.urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return None
    return url.strip() if scheme in ("http", "https") else None


def create_app(root: Path, release: str | None = None, token: str = "", reviewer: str = "curator",
               require_token: bool = False) -> Starlette:
    """``token`` guards every review (and every request when ``require_token``)."""
    data = CatalogData(root, release)
    label = str(root)  # as the user gave it (the header shows it; no resolved machine path)
    env = _templates()

    def page(request: Request, template: str, status_code: int = 200, **ctx) -> HTMLResponse:
        body = env.get_template(template).render(token=token, catalog=label, path=request.url.path, **ctx)
        return HTMLResponse(body, status_code=status_code)

    def message(request: Request, title: str, text: str, status_code: int = 200) -> HTMLResponse:
        return page(request, "message.html", status_code=status_code, title=title, text=text)

    def empty(request: Request) -> HTMLResponse | None:
        if not (data.root / "stages").is_dir():
            return message(request, "An empty catalog", f"{data.root} has no stage tables yet: run `curate run` "
                           "on its recipe, then reload this page.")
        return None

    def overview(request: Request):
        return empty(request) or page(request, "overview.html", title="Overview", **pages.overview(data))

    def clips(request: Request):
        if (resp := empty(request)) is not None:
            return resp
        q = request.query_params
        try:
            page_no = max(0, int(q.get("page", "0")))
        except ValueError:
            page_no = 0
        ctx = pages.clip_page(data, q.get("where", ""), q.get("sort", "clip_id"), q.get("desc") == "1", page_no)
        return page(request, "clips.html", title="Clips", **ctx)

    def clip(request: Request):
        if (resp := empty(request)) is not None:
            return resp
        clip_id = request.path_params["clip_id"]
        detail = pages.clip_detail(data, clip_id)
        if detail is None:
            return message(request, "No such clip", f"No clip has the id {clip_id!r} in this catalog's segment "
                           "table (it may come from an older fingerprint).", 404)
        path = detail["video"].get("video_path")
        detail["playable"] = bool(path) and Path(path).suffix.lower() in PLAYABLE
        return page(request, "clip.html", title=clip_id, words_json=detail["words"], **detail)

    def failures(request: Request):
        if (resp := empty(request)) is not None:
            return resp
        q = request.query_params
        return page(request, "failures.html", title="Failures",
                    **pages.failures(data, q.get("stage") or None, q.get("code") or None))

    def media(request: Request):
        path = resolve_media(data.root, request.path_params["path"])
        if path is None:
            raise HTTPException(404, "not a media file of this catalog")
        return FileResponse(path, media_type=media_type(path))  # answers Range requests (seeking)

    async def review(request: Request):
        if not hmac.compare_digest(request.headers.get("x-curate-token", ""), token):
            return JSONResponse({"error": "missing or wrong X-Curate-Token (reload the page)"}, 403)
        try:
            body = json.loads(await request.body())
            clip_id, verdict, reason = body["clip_id"], body["verdict"], body.get("reason")
            if not isinstance(clip_id, str) or not isinstance(reason, (str, type(None))):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected JSON {"clip_id": ..., "verdict": "keep"|"reject", '
                                          '"reason": ...}'}, 400)
        return await run_in_threadpool(_record, clip_id, verdict, reason)

    def _record(clip_id: str, verdict: str, reason: str | None) -> JSONResponse:  # DuckDB and fsync: off the loop
        try:
            known = data.query("SELECT 1 FROM clips WHERE clip_id = ?", [clip_id])
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, 503)
        if not known:
            return JSONResponse({"error": f"no clip {clip_id!r} in this catalog"}, 404)
        try:
            row = reviews.append_review(data.root, clip_id, verdict, reason, reviewer)
        except reviews.BadReview as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(row)

    async def not_found(request: Request, exc: HTTPException):
        if request.url.path.startswith(("/media/", "/static/", "/api/")):
            return Response(str(exc.detail), status_code=exc.status_code, media_type="text/plain")
        return message(request, "Not found", f"{request.url.path}: {exc.detail}", exc.status_code)

    routes = [Route("/", overview), Route("/clips", clips), Route("/clip/{clip_id:path}", clip),
              Route("/failures", failures), Route("/media/{path:path}", media),
              Route("/api/review", review, methods=["POST"]),
              Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
    middleware = []
    if require_token:
        middleware.append(Middleware(_TokenGate, token=token))
    else:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: not_found})
    app.state.data = data
    return app


class _TokenGate:
    """Every request carries the token: ``?token=`` once (then a cookie), or the header."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        given = (request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
                 or request.headers.get("x-curate-token") or "")
        if not hmac.compare_digest(given, self.token):
            resp = HTMLResponse("<!doctype html><title>curate view</title><p>This catalog viewer needs its token: "
                                "open the URL that <code>curate view</code> printed.</p>", status_code=401)
            return await resp(scope, receive, send)
        if "token" in request.query_params:  # once: then a cookie, and a URL without the token
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            resp = RedirectResponse(request.url.path + ("?" + urllib.parse.urlencode(rest) if rest else ""), 303)
            resp.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            return await resp(scope, receive, send)
        return await self.app(scope, receive, send)
