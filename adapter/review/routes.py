"""The /review endpoints of `facet-adapter serve` (docs/server.md, the /review worklist):

| endpoint | what |
|---|---|
| `GET /review` | the worklist: held claims first; filters `status`, `rule`, `pack`, `from`, `to` |
| `GET /review/claims/{identifier}` | one claim: status, actions, history, the claim as coded now |
| `POST /review/claims/{identifier}/override` | a coder accepts a held claim, with a reason |
| `POST /review/claims/{identifier}/recheck` | a coder re-syncs the claim now (through the queue) |
| `GET`, `POST /review/login`; `POST /review/logout` | signing in and out |

Pages are HTML (no script; a Content-Security-Policy allows only the page's own inline styles),
never cached. Every POST needs the session's CSRF token (403 without); override and re-check need
the coder role (403 for a viewer). A claim is named in addresses by its identifier only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..errors import NoFacetProcedureError, UpstreamError
from ..service.jobs import Notice
from ..service.queue import JobQueue
from ..service.settings import Settings
from ..service.web import read_body
from ..writers.html import review_fragment
from .access import COOKIE, COOKIE_PATH, Access, Visitor
from .live import LiveRecord
from .pages import MAX_REASON_CHARS, render
from .store import REVIEW_SOURCE, STATUS_WORDS, STATUSES, ClaimRow, Filters, ReviewStore
from .users import User, UserDirectory

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 64 * 1024
_IDENTIFIER = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_POLL_SECONDS = 0.2


def security_headers(nonce: str | None = None) -> dict[str, str]:
    styles = f"'nonce-{nonce}'" if nonce else "'none'"
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src {styles}; img-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }


def review_router(settings: Settings, queue: JobQueue, wake: Callable[[int], None]) -> APIRouter:
    review = settings.review
    store = ReviewStore(queue)
    access = Access(review, UserDirectory(review.users_file))
    live = LiveRecord(settings)
    router = APIRouter(include_in_schema=False)

    # ------------------------------------------------------------------ helpers

    def keep_session(response: Response, request: Request, visitor: Visitor) -> Response:
        if visitor.new_session and visitor.session is not None:
            response.set_cookie(
                COOKIE,
                visitor.session.token,
                path=COOKIE_PATH,
                httponly=True,
                samesite="strict",
                secure=access.secure(request),
            )
        return response

    def page(
        request: Request, visitor: Visitor, template: str, title: str, *, status: int = 200, **values: Any
    ) -> Response:
        nonce = secrets.token_urlsafe(16)
        session = visitor.session
        flash: list[str] = []
        if session is not None and status == 200:
            flash, session.flash = session.flash, []
        body = render(
            template,
            title=title,
            user=visitor.user,
            csrf=session.csrf if session is not None else "",
            flash=flash,
            csp_nonce=nonce,
            **values,
        )
        response = HTMLResponse(body, status_code=status, headers=security_headers(nonce))
        return keep_session(response, request, visitor)

    def refuse(request: Request, visitor: Visitor, status: int, title: str, message: str, **extra: Any) -> Response:
        headers = extra.pop("headers", {})
        response = page(request, visitor, "message.html.j2", title, status=status, message=message, **extra)
        response.headers.update(headers)
        return response

    def go(request: Request, visitor: Visitor, url: str) -> Response:
        return keep_session(RedirectResponse(url, status_code=303, headers=security_headers()), request, visitor)

    async def form(request: Request) -> dict[str, str]:
        """The fields of a url-encoded form; none for anything else (so its CSRF check fails: 403)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return {}
        body = await read_body(request, MAX_FORM_BYTES)
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            return {}
        fields: dict[str, str] = {}
        for name, value in pairs:
            fields.setdefault(name, value)
        return fields

    async def checked_post(request: Request, *, coder: bool) -> tuple[Visitor, User, dict[str, str]] | Response:
        """The signed-in visitor and the form of a POST, or the refusal: 401 not signed in, 403
        without the session's CSRF token, 403 for a viewer where a coder is needed."""
        visitor = access.visitor(request)
        if visitor.user is None:
            return refuse(request, visitor, 401, "Sign in first", "Sign in to the review worklist first.",
                          back="/review/login", back_text="Sign in")  # fmt: skip
        fields = await form(request)
        if not access.csrf_ok(visitor.session, fields.get("csrf")):
            log.warning("review: a form without its CSRF token was refused (%s)", request.url.path.split("/")[-1])
            return refuse(
                request,
                visitor,
                403,
                "Form refused",
                "This form did not come from this page (its security token is missing or old); reload the page "
                "and send it again.",
            )
        if coder and not visitor.user.can_act:
            log.warning("review: %s (viewer) tried to %s", visitor.user.name, request.url.path.split("/")[-1])
            return refuse(request, visitor, 403, "Not allowed", "Only a coder can override or re-check a claim.")
        return visitor, visitor.user, fields

    def no_claim(request: Request, visitor: Visitor) -> Response:
        return refuse(request, visitor, 404, "No such claim", "The service has coded no claim with this identifier.")

    def claim_row(identifier: str) -> ClaimRow | None:
        return store.claim(identifier) if _IDENTIFIER.fullmatch(identifier) else None

    # ------------------------------------------------------------------ signing in and out

    @router.get("/review/login")
    async def login_form(request: Request) -> Response:
        visitor = access.visitor(request)
        if visitor.user is not None:
            return go(request, visitor, "/review")
        if visitor.session is None:
            visitor = Visitor(access.sessions.new(None), None, new_session=True)
        return page(request, visitor, "login.html.j2", "Sign in", **_login_values(review.users_file is not None))

    def _login_values(passwords: bool, problem: str = "", username: str = "") -> dict[str, Any]:
        return {"passwords": passwords, "sso": bool(review.trusted_proxies), "problem": problem, "username": username}

    @router.post("/review/login")
    async def login(request: Request) -> Response:
        visitor = access.visitor(request)
        fields = await form(request)
        if not access.csrf_ok(visitor.session, fields.get("csrf")):
            return refuse(
                request,
                visitor,
                403,
                "Sign-in refused",
                "The sign-in form has expired or did not come from this site; open it again.",
                back="/review/login",
                back_text="Sign in",
            )
        if review.users_file is None:
            return refuse(request, visitor, 403, "Sign-in refused", "Sign in through your organisation's sign-on.")
        username = fields.get("username", "").strip()[:64]
        keys = [f"address:{access.client_address(request)}", f"name:{username.lower()}"]
        wait = access.limiter.retry_after(keys)
        if wait is not None:
            log.warning("review: sign-in refused: too many failed attempts")
            return refuse(
                request,
                visitor,
                429,
                "Too many attempts",
                f"Too many failed sign-ins; try again in {int(wait // 60) + 1} minute(s).",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        user = await run_in_threadpool(access.directory.verify, username, fields.get("password", ""))
        if user is None:
            access.limiter.failed(keys)
            log.info("review: a sign-in failed (wrong user name or password)")
            values = _login_values(True, "The user name or password is wrong.", username)
            return page(request, visitor, "login.html.j2", "Sign in", status=401, **values)
        access.limiter.forget(keys[1])
        access.sessions.drop(visitor.session)
        log.info("review: %s signed in (%s)", user.name, user.role)
        return go(request, Visitor(access.sessions.new(user.name), user, new_session=True), "/review")

    @router.post("/review/logout")
    async def logout(request: Request) -> Response:
        checked = await checked_post(request, coder=False)
        if isinstance(checked, Response):
            return checked
        visitor, _, _ = checked
        access.sessions.drop(visitor.session)
        response = RedirectResponse("/review/login", status_code=303, headers=security_headers())
        response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
        return response

    # ------------------------------------------------------------------ the worklist

    @router.get("/review")
    async def worklist(request: Request) -> Response:
        visitor = access.visitor(request)
        if visitor.user is None:
            return go(request, visitor, "/review/login")
        filters, problem = _filters(request.query_params)
        rows, total = await run_in_threadpool(store.claims, filters)
        rules, packs = await run_in_threadpool(store.choices)
        return page(
            request,
            visitor,
            "worklist.html.j2",
            "Worklist",
            rows=rows,
            total=total,
            rules=rules,
            packs=packs,
            filters=filters,
            filtered=filters != Filters(),
            problem=problem,
        )

    # ------------------------------------------------------------------ one claim

    async def claim_page(
        request: Request, visitor: Visitor, row: ClaimRow, *, status: int = 200, error: str = ""
    ) -> Response:
        coded = await run_in_threadpool(live.code, row)
        events = await run_in_threadpool(store.events, row.identifier)
        result = coded.result
        changed = ""
        if result is not None and result.decision.identifier != row.identifier:
            changed = "The session's procedures changed since the service coded this claim; re-check it."
        elif result is not None and coded.fingerprint != row.fingerprint:
            changed = "The record changed since the service last coded this claim; re-check it to sync."
        can_override = (
            row.status == "needs-review" and result is not None and result.held and not changed and bool(row.claim_id)
        )
        held_by = sorted({f.rule_id for f in result.findings if f.severity == "error"}) if result else []
        return page(
            request,
            visitor,
            "claim.html.j2",
            f"{'Prior authorization' if row.use == 'preauthorization' else 'Claim'} of "
            f"{row.service_date or 'unknown date'}: {STATUS_WORDS[row.status]}",
            status=status,
            row=row,
            events=events,
            fragment=review_fragment(result.decision) if result is not None else None,
            problem=coded.problem or "",
            changed=changed,
            error=error,
            can_override=can_override,
            held_by=held_by,
            fingerprint=coded.fingerprint or "",
        )

    @router.get("/review/claims/{identifier}")
    async def claim(request: Request, identifier: str) -> Response:
        visitor = access.visitor(request)
        if visitor.user is None:
            return go(request, visitor, "/review/login")
        row = await run_in_threadpool(claim_row, identifier)
        if row is None:
            return no_claim(request, visitor)
        return await claim_page(request, visitor, row)

    @router.post("/review/claims/{identifier}/override")
    async def override(request: Request, identifier: str) -> Response:
        checked = await checked_post(request, coder=True)
        if isinstance(checked, Response):
            return checked
        visitor, user, fields = checked
        row = await run_in_threadpool(claim_row, identifier)
        if row is None:
            return no_claim(request, visitor)
        reason = _clean(fields.get("reason", ""))
        if not reason:
            return await claim_page(request, visitor, row, status=400, error="Give a reason for the override.")
        if len(reason) > MAX_REASON_CHARS:
            return await claim_page(
                request, visitor, row, status=400, error=f"The reason is longer than {MAX_REASON_CHARS} characters."
            )
        back = {"back": f"/review/claims/{row.identifier}", "back_text": "Back to the claim"}
        if row.status != "needs-review":
            return refuse(request, visitor, 409, "Not held", "This claim is not waiting for review.", **back)
        from ..server.override import OverrideRefused

        try:
            done, result = await run_in_threadpool(
                lambda: live.override(row, user=user.name, reason=reason, fingerprint=fields.get("fingerprint", ""))
            )
        except OverrideRefused as exc:
            return refuse(request, visitor, 409, "Override refused", exc.message, **back)
        except NoFacetProcedureError as exc:
            return refuse(request, visitor, 409, "Override refused", exc.message, **back)
        except UpstreamError as exc:
            log.warning("review: override of %s failed on the FHIR server (%s)", row.claim_id, type(exc).__name__)
            return refuse(request, visitor, 502, "FHIR server error", f"Nothing was changed: {exc.message}", **back)
        await run_in_threadpool(
            lambda: store.record_override(
                row.identifier,
                user=user.name,
                reason=reason,
                fingerprint=done.fingerprint,
                findings=result.findings,
                claim=f"Claim/{done.claim_id}",
                claim_version=done.claim_version,
                task=f"Task/{done.task_id}" if done.task_id else None,
                provenance=done.provenance_id,
            )
        )
        rules = sorted({f.rule_id for f in result.findings if f.severity == "error"})
        log.info("review: %s overrode Claim/%s (rules %s)", user.name, done.claim_id, ", ".join(rules))
        if visitor.session is not None:
            visitor.session.flash.append(
                f"Overridden: Claim/{done.claim_id} is active on the FHIR server"
                + (f", Task/{done.task_id} completed with your reason" if done.task_id else "")
                + ", and a Provenance records it."
            )
        return go(request, visitor, f"/review/claims/{row.identifier}")

    @router.post("/review/claims/{identifier}/recheck")
    async def recheck(request: Request, identifier: str) -> Response:
        checked = await checked_post(request, coder=True)
        if isinstance(checked, Response):
            return checked
        visitor, user, _ = checked
        row = await run_in_threadpool(claim_row, identifier)
        if row is None:
            return no_claim(request, visitor)
        type_, _, id_ = row.focus.partition("/")
        notice = Notice(
            kind="resource",
            source=REVIEW_SOURCE,
            resource_type=type_,
            resource_id=id_,
            lane=row.patient,
            detail=json.dumps({"user": user.name, "claim": row.identifier}),
        )
        [queued] = await run_in_threadpool(queue.enqueue, [notice])
        wake(1)
        log.info("review: %s re-checks %s (job %d)", user.name, row.focus, queued.job_id)
        message = await _wait_for(queued.job_id)
        if visitor.session is not None:
            visitor.session.flash.append(message)
        return go(request, visitor, f"/review/claims/{row.identifier}")

    async def _wait_for(job_id: int) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + review.recheck_wait_seconds
        while True:
            job = await run_in_threadpool(queue.get, job_id)
            if job is None:
                return f"The re-check (job {job_id}) is no longer in the queue."
            if job.state == "done":
                if job.result and job.result.startswith("nothing to claim"):
                    return f"Re-checked: {job.result}."
                return f"Re-checked (job {job_id}): {job.result or 'done'}."
            if job.state in ("dead", "retry"):
                return f"The re-check (job {job_id}) did not finish: {job.last_error or 'failed'}."
            if loop.time() >= deadline:
                return f"The re-check is queued (job {job_id}); reload this page in a moment for its result."
            await asyncio.sleep(_POLL_SECONDS)

    return router


def _clean(text: str) -> str:
    """The reason as typed, without control characters other than line breaks and tabs."""
    kept = "".join(c for c in text.replace("\r\n", "\n") if c in "\n\t" or (c.isprintable() or c == " "))
    return kept.strip()


def _filters(query: Mapping[str, str]) -> tuple[Filters, str]:
    problems: list[str] = []
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        problems.append("unknown status")
        status = None
    dates: list[date | None] = []
    for name in ("from", "to"):
        text = query.get(name) or ""
        try:
            dates.append(date.fromisoformat(text) if text else None)
        except ValueError:
            problems.append(f"'{name}' is not a date (YYYY-MM-DD)")
            dates.append(None)
    rule = (query.get("rule") or "")[:100] or None
    pack = (query.get("pack") or "")[:100] or None
    problem = f"Filter ignored: {'; '.join(problems)}." if problems else ""
    return Filters(status=status, rule=rule, pack=pack, date_from=dates[0], date_to=dates[1]), problem
