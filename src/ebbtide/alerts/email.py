"""Alerts by email, through the workspace's SMTP server."""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import threading
from email.message import EmailMessage

from ebbtide.alerts.message import AlertMessage, AlertTimeout
from ebbtide.config.alerts import SmtpSpec


class EmailNotifier:
    """One message to all the subscription's addresses."""

    label = "Email"

    def __init__(self, smtp: SmtpSpec, recipients: list[str]) -> None:
        self.smtp, self.recipients = smtp, recipients
        self.endpoint = f"{smtp.host}:{smtp.port}"

    def send(self, message: AlertMessage, timeout_s: float) -> None:
        limit = min(timeout_s, self.smtp.timeout_s or timeout_s)
        client = self._client(limit)
        # A socket timeout bounds each read, not the conversation: a server that answers a
        # byte at a time could hold the sync for ever. The watchdog cuts the connection.
        watchdog = _Watchdog(client, limit)
        try:
            self._converse(client, self._mail(message))
        except (OSError, smtplib.SMTPException) as exc:
            if watchdog.fired or _timed_out(exc):
                raise AlertTimeout(self.endpoint, limit) from exc
            raise
        finally:
            watchdog.cancel()
            client.close()

    def _mail(self, message: AlertMessage) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.smtp.sender
        mail["To"] = ", ".join(self.recipients)
        mail["Subject"] = message.title
        mail.set_content(message.text())
        return mail

    def _client(self, timeout_s: float) -> smtplib.SMTP:
        if self.smtp.tls == "ssl":
            context = ssl.create_default_context()
            return smtplib.SMTP_SSL(timeout=timeout_s, context=context)
        return smtplib.SMTP(timeout=timeout_s)

    def _converse(self, client: smtplib.SMTP, mail: EmailMessage) -> None:
        smtp = self.smtp
        client.connect(smtp.host, smtp.port)
        if smtp.tls == "starttls":
            client.starttls(context=ssl.create_default_context())
        if smtp.user:
            client.login(smtp.user, smtp.password or "")
        client.send_message(mail)
        client.quit()


def _timed_out(exc: BaseException) -> bool:
    """Whether a socket timeout is behind `exc`: smtplib reports one that ends a read as
    "Connection unexpectedly closed", with the timeout only as its context."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _Watchdog:
    """Shuts the client's socket down once `timeout_s` has passed, which ends any read."""

    def __init__(self, client: smtplib.SMTP, timeout_s: float) -> None:
        self.client, self.fired = client, False
        self._timer = threading.Timer(timeout_s, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self) -> None:
        self.fired = True
        sock = getattr(self.client, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: nothing left to end
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()
