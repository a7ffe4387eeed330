"""Alerts posted as JSON: Slack's incoming webhooks (blocks) and generic webhooks."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from ebbtide.alerts.message import AlertMessage, AlertTimeout
from ebbtide.config.alerts import SlackTarget, WebhookTarget

TIMEOUT_S = 10.0
_EMOJI = {"failed": ":red_circle:", "partial_success": ":large_orange_circle:"}


class AlertPostError(Exception):
    """The endpoint did not take the alert."""


def endpoint_of(url: str) -> str:
    """host:port of a URL: what an error may name (the path and query may hold a token)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def post_json(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    timeout_s: float = TIMEOUT_S,
) -> None:
    """POST `body` within `timeout_s` in all; anything but a 2xx answer raises AlertPostError,
    no answer in time raises AlertTimeout."""

    import aiohttp  # a fifth of a second to import: only when an alert goes out

    async def post() -> None:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            # Not followed: a 301/302 would turn the POST into a bodiless GET that "succeeds",
            # and the headers (credentials) must not go wherever the Location points.
            session.post(url, json=body, headers=headers or {}, allow_redirects=False) as response,
        ):
            if 300 <= response.status < 400:
                where = response.headers.get("Location", "nowhere")
                raise AlertPostError(
                    f"HTTP {response.status}: the endpoint redirects to {where}; redirects are"
                    " not followed: if that address is right, configure it instead"
                )
            if response.status >= 300:
                text = (await response.text())[:200]
                raise AlertPostError(f"HTTP {response.status}: {text}")

    try:
        asyncio.run(post())
    except TimeoutError as exc:  # aiohttp's own carries no text at all
        raise AlertTimeout(endpoint_of(url), timeout_s) from exc


class SlackNotifier:
    label = "Slack"

    def __init__(self, target: SlackTarget) -> None:
        self.slack = target
        self.endpoint = endpoint_of(target.webhook_url)

    def send(self, message: AlertMessage, timeout_s: float) -> None:
        body = slack_body(message, self.slack.channel)
        post_json(self.slack.webhook_url, body, timeout_s=timeout_s)


def slack_body(message: AlertMessage, channel: str) -> dict[str, Any]:
    """The message in Slack's blocks: title, mapping and status, counts, top error, link."""
    emoji = _EMOJI.get(message.event, ":large_green_circle:")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": message.title}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Mapping*\n{message.mapping}"},
                {"type": "mrkdwn", "text": f"*Status*\n{emoji} {message.status}"},
            ],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": message.counts_line()}},
    ]
    if message.error:
        blocks.append(_text(f"*Error*\n{message.error}"))
    if message.new_errors:
        blocks.append(_text("*New error*\n" + "\n".join(message.new_errors)))
    if message.top_error:
        action = f"\n*Recommended action*\n{message.action}" if message.action else ""
        blocks.append(_text(f"*Most failed records*\n{message.top_error}{action}"))
    if message.url:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{message.url}|Run>"}]}
        )
    return {"channel": channel, "text": message.title, "blocks": blocks}


def _text(markdown: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": markdown[:2900]}}


class WebhookNotifier:
    label = "Webhook"

    def __init__(self, target: WebhookTarget) -> None:
        self.webhook = target
        self.endpoint = endpoint_of(target.url)

    def send(self, message: AlertMessage, timeout_s: float) -> None:
        post_json(self.webhook.url, message.to_json(), self.webhook.headers, timeout_s)
