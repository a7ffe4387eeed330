"""Real servers on 127.0.0.1 that alerts are sent to: an SMTP server and HTTP endpoints.

`SmtpServer` is aiosmtpd's `Controller` with a handler that keeps every envelope (optionally
requiring a login, or refusing every message); `HttpEndpoints` is an aiohttp server in a thread
that keeps every POST, by path, and answers each path with a chosen status (it plays Slack's
incoming webhooks and a generic webhook). `closed_port()` is a port nothing listens on;
`SilentServer` accepts connections and never says a word (a hanging SMTP or HTTP server).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any, cast

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

# Sockets that keep the ports closed_port() handed out: bound, never listening, open until
# the test process exits. A port merely free a moment ago could be taken by a server another
# test (or another pytest-xdist worker) starts in the meantime; a bound one cannot.
_CLOSED_PORTS: list[socket.socket] = []


def closed_port() -> int:
    """A loopback port nothing listens on, nor will: connecting to it is refused."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound without SO_REUSEADDR: nobody else can bind it
    _CLOSED_PORTS.append(holder)
    return int(holder.getsockname()[1])


class SilentServer:
    """Accepts every connection on 127.0.0.1 and never answers (no SMTP greeting, no HTTP
    response) until it is closed; `connected` is set once it has accepted one."""

    def __init__(self) -> None:
        self.connected = threading.Event()
        self.connections: list[socket.socket] = []
        self._accepted = threading.Condition()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # shutdown() wakes the accept() below on Linux; close() alone would not.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=10)
        for conn in self.connections:
            conn.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._accepted:
                self.connections.append(conn)
                self._accepted.notify_all()
            self.connected.set()

    def saw(self, connections: int, within_s: float = 30.0) -> bool:
        """Whether it has accepted that many connections (the kernel may have completed a
        handshake the accepting thread has not picked up yet: wait for it, not for time)."""
        with self._accepted:
            return self._accepted.wait_for(lambda: len(self.connections) >= connections, within_s)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


# -- SMTP ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """One message as the SMTP server received it."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        return str(self.message.get_content())

    @property
    def raw(self) -> str:
        return self.message.as_string()


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.server.data_commands += 1
        if self.server.refuse:
            return "554 5.6.0 refused by the ebbtide test SMTP server"
        content = cast(bytes, envelope.content)
        parsed = cast(EmailMessage, message_from_bytes(content, policy=default_policy))
        self.server.mails.append(
            Mail(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos], parsed)
        )
        return "250 OK"


class _BoundController(Controller):
    """aiosmtpd's Controller on a socket bound to a port the kernel chose (port 0).

    Controller binds the port it is given; choosing a free port first and binding it later
    races with every other server started in between (other tests, other xdist workers).
    """

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        super().__init__(
            handler, hostname="127.0.0.1", port=self._socket.getsockname()[1], **kwargs
        )

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._socket)


class SmtpServer:
    """aiosmtpd on 127.0.0.1; `login=(user, password)` makes it require that AUTH (no TLS)."""

    def __init__(self, login: tuple[str, str] | None = None) -> None:
        self.login = login
        self.mails: list[Mail] = []
        self.logins: list[tuple[str, str]] = []
        self.data_commands = 0  # every DATA, refused or not
        self.refuse = False  # answer 554 to every message
        self.port = 0
        self._controller: Controller | None = None

    def __enter__(self) -> SmtpServer:
        self._controller = _BoundController(
            _Handler(self),
            authenticator=self._authenticate if self.login else None,
            auth_required=self.login is not None,
            auth_require_tls=False,
            ready_timeout=30,  # aiosmtpd's 1 s is too short on a busy machine
        )
        self._controller.start()
        self.port = self._controller.port
        return self

    def __exit__(self, *exc: object) -> None:
        if self._controller is not None:
            self._controller.stop()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        given = (data.login.decode(), data.password.decode())
        self.logins.append(given)
        return AuthResult(success=given == self.login, handled=False)  # aiosmtpd answers

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.mails if address in m.rcpt_tos]


# -- HTTP ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    """One POST as an endpoint received it."""

    path: str
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


class HttpEndpoints:
    """Keeps every POST to any path; answers `status[path]` (default 200).

    An error answer repeats the URL it was sent to (`echo = "url"`), or only its path
    (`echo = "path"`, as Express's "Cannot POST /…" does), so a token in the URL reaches the
    sender's error message.
    """

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.status: dict[str, int] = {}
        self.echo = "url"
        self.base = ""
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> HttpEndpoints:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _open(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._take)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _take(self, request: web.Request) -> web.Response:
        text = await request.text()
        with self._lock:
            self.posts.append(Post(request.path, dict(request.headers), text))
            status = self.status.get(request.path, 200)
        if status >= 300:
            where = request.url if self.echo == "url" else request.path
            return web.Response(status=status, text=f"no service at {where}")
        return web.Response(status=status, text="ok")

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def to(self, path: str) -> list[Post]:
        with self._lock:
            return [p for p in self.posts if p.path == path]
