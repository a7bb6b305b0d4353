"""Refuse request bodies past a size limit with 413 while they stream, never reading one whole."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import error_response


class BodyLimit:
    """ASGI middleware: uploads (multipart) get `upload_limit` bytes, every other body `json_limit`.

    A declared Content-Length past the limit is refused before a byte is read. A body that streams
    past it is cut where it crosses: the client gets the 413 at once and the app below sees the
    client go away. Raising from `receive` instead would not work: middleware that reads the body
    in a task group wraps the error, and it would surface as a 500.
    """

    def __init__(self, app: ASGIApp, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        is_upload = b"multipart/form-data" in headers.get(b"content-type", b"")
        limit = self.upload_limit if is_upload else self.json_limit
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await refuse(limit)(scope, receive, send)
            return
        received = 0
        refused = started = False

        async def limited() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received <= limit:
                return message
            refused = True
            if not started:
                await refuse(limit)(scope, receive, send)
            return {"type": "http.disconnect"}

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the client already has its 413; whatever the app says after is moot
            started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not refused:
                raise
            # The app failed reading a body we cut short (e.g. ClientDisconnect); the 413 is sent.


def refuse(limit: int) -> ASGIApp:
    return error_response(413, "too_large", f"the request body is over {limit} bytes")
