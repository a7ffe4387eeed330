"""Alerts by email, through the workspace's SMTP server."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from ebbtide.alerts.message import AlertMessage
from ebbtide.config.alerts import SmtpSpec


class EmailNotifier:
    """One message to all the subscription's addresses."""

    def __init__(self, smtp: SmtpSpec, recipients: list[str]) -> None:
        self.smtp, self.recipients = smtp, recipients
        self.target = ", ".join(recipients)

    def send(self, message: AlertMessage) -> None:
        mail = EmailMessage()
        mail["From"] = self.smtp.sender
        mail["To"] = ", ".join(self.recipients)
        mail["Subject"] = message.title
        mail.set_content(message.text())
        smtp = self.smtp
        if smtp.tls == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                smtp.host, smtp.port, timeout=smtp.timeout_s, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
        with client:
            if smtp.tls == "starttls":
                client.starttls(context=ssl.create_default_context())
            if smtp.user:
                client.login(smtp.user, smtp.password or "")
            client.send_message(mail)
