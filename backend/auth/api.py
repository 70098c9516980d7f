"""Login/logout, current identity, users and service-account API tokens."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.auth.models import Role
from backend.deps import SESSION_COOKIE, CtxDep, PrincipalDep, client_ip
from backend.errors import ServiceError, TooManyRequests
from backend.policies.login import LoginRefused
from backend.timeutil import iso

router = APIRouter(tags=["auth"])

ID_PATH = Path(pattern=r"^[a-z]{3}-[0-9a-f]{16}$", description="Resource id, e.g. tok-0123456789abcdef")


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)


class Identity(BaseModel):
    id: str
    kind: str
    label: str
    org_id: str
    role: Role


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    role: Role = Role.member


class TokenPublic(BaseModel):
    id: str
    name: str
    role: Role
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The secret. Shown only in this response.")


class TokensPublic(BaseModel):
    data: list[TokenPublic]
    count: int


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    role: Role = Role.member


class UserPublic(BaseModel):
    id: str
    email: str
    role: Role
    disabled: bool
    created_at: str


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int


def _safe_next(target: str | None) -> str:
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _cross_site(request: Request) -> bool:
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin == "null"
    return urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()


def _login_openapi() -> dict:
    schema = LoginBody.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "application/x-www-form-urlencoded": {
                    "schema": {**schema, "properties": {**schema["properties"], "next": {"type": "string"}}}
                },
            },
        }
    }


@router.post(
    "/auth/login",
    response_model=Identity,
    openapi_extra=_login_openapi(),
    responses={303: {"description": "Form login: redirect"}, 401: {}, 403: {}, 422: {}, 429: {}},
)
async def login(request: Request, ctx: CtxDep):
    """Log in with email and password. JSON clients get the identity and the session cookie;
    the login form (urlencoded) gets a redirect to `next`, or back to /login with the error.
    The organization's login policies judge a login whose password is right: a refusal is a
    403 (`login denied by policy: …`), and the form goes back to /login?error=denied."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_form = content_type == "application/x-www-form-urlencoded"
    if _cross_site(request):
        # Login CSRF: another site must not log a browser into an account of its choosing.
        return JSONResponse({"detail": "cross-site login requests are refused"}, 403)
    next_url = "/"
    if is_form:
        form = await request.form()
        email, password = str(form.get("email") or ""), str(form.get("password") or "")
        next_url = _safe_next(str(form.get("next") or "/"))
    else:
        raw = await request.body()
        try:
            body = LoginBody.model_validate(json.loads(raw or b"null"))
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return JSONResponse({"detail": 'body must be JSON: {"email": ..., "password": ...}'}, 422)
        except ValidationError as exc:
            errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
            return JSONResponse({"detail": errors}, 422)
        email, password = body.email, body.password

    from starlette.concurrency import run_in_threadpool

    def _do():
        return ctx.auth.login(
            ctx.session,
            email,
            password,
            client_ip(request),
            request.headers.get("user-agent"),
            settings=ctx.settings,
        )

    try:
        token, principal = await run_in_threadpool(_do)
    except ServiceError as exc:
        if not is_form:
            raise
        # The page maps the code to its own text: a link cannot make it show arbitrary words.
        code = "too_many" if isinstance(exc, TooManyRequests) else "invalid"
        if isinstance(exc, LoginRefused):
            code = exc.code  # a login policy said no; its messages are in the audit log
        target = f"/login?error={code}&next={quote(next_url, safe='')}"
        if isinstance(exc, TooManyRequests):
            target += f"&retry_after={exc.retry_after}"
        return RedirectResponse(target, status_code=303)
    response: Response
    if is_form:
        response = RedirectResponse(next_url, status_code=303)
    else:
        response = JSONResponse(
            Identity(
                id=principal.id,
                kind=principal.kind,
                label=principal.label,
                org_id=principal.org_id,
                role=principal.role,
            ).model_dump()
        )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=ctx.settings.session_ttl_hours * 3600,
        httponly=True,
        samesite="strict",
        secure=ctx.settings.secure_cookies,
        path="/",
    )
    return response


@router.post("/auth/logout", status_code=204, responses={303: {"description": "Form logout: redirect"}})
def logout(request: Request, ctx: CtxDep):
    """End the current browser session (the cookie is cleared either way)."""
    with ctx.session() as s:
        ctx.auth.logout(
            s, request.cookies.get(SESSION_COOKIE), client_ip(request), request.headers.get("user-agent")
        )
    is_form = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
    response: Response = RedirectResponse("/login", 303) if is_form else Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=ctx.settings.secure_cookies
    )
    return response


@router.get("/auth/me", response_model=Identity)
def me(principal: PrincipalDep) -> Identity:
    return Identity(
        id=principal.id,
        kind=principal.kind,
        label=principal.label,
        org_id=principal.org_id,
        role=principal.role,
    )


@router.post("/auth/password", status_code=204)
def change_password(body: PasswordChange, request: Request, principal: PrincipalDep, ctx: CtxDep) -> Response:
    """Change your own password. All your sessions end (log in again with the new password)."""
    with ctx.session() as s:
        ctx.auth.change_password(s, principal, body.current_password, body.new_password)
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=ctx.settings.secure_cookies
    )
    return response


def _token_public(tok) -> dict:
    return {
        "id": tok.id,
        "name": tok.name,
        "role": tok.role,
        "created_at": iso(tok.created_at) or "",
        "last_used_at": iso(tok.last_used_at),
        "revoked_at": iso(tok.revoked_at),
    }


@router.post("/tokens", status_code=201, response_model=TokenCreated)
def create_token(body: TokenCreate, principal: PrincipalDep, ctx: CtxDep) -> dict:
    """Create a service-account token (admins). The secret is in this response only."""
    with ctx.session() as s:
        tok, plaintext = ctx.auth.create_token(s, principal, body.name, body.role)
        return {**_token_public(tok), "token": plaintext}


@router.get("/tokens", response_model=TokensPublic)
def list_tokens(principal: PrincipalDep, ctx: CtxDep) -> dict:
    with ctx.session(readonly=True) as s:
        rows = [_token_public(t) for t in ctx.auth.list_tokens(s, principal)]
    return {"data": rows, "count": len(rows)}


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: Annotated[str, ID_PATH], principal: PrincipalDep, ctx: CtxDep) -> Response:
    with ctx.session() as s:
        ctx.auth.revoke_token(s, principal, token_id)
    return Response(status_code=204)


@router.get("/users", response_model=UsersPublic)
def list_users(principal: PrincipalDep, ctx: CtxDep) -> dict:
    with ctx.session(readonly=True) as s:
        rows = ctx.auth.list_members(s, principal)
    return {"data": rows, "count": len(rows)}


@router.post("/users", status_code=201, response_model=UserPublic)
def create_user(body: UserCreate, principal: PrincipalDep, ctx: CtxDep) -> dict:
    """Create a user in your organization (admins)."""
    with ctx.session() as s:
        user = ctx.auth.create_user(s, principal, body.email, body.password, body.role)
        return {
            "id": user.id,
            "email": user.email,
            "role": body.role,
            "disabled": user.disabled,
            "created_at": iso(user.created_at) or "",
        }
