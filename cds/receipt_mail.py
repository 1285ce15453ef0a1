"""The Authorization Receipt by e-mail (CDS-WG3-01 §9.4: the customer keeps the receipt's address to revoke later).

One plain-text RFC 5322 message with the receipt's link, confirmation number, date and requester, sent with the
standard library's smtplib: STARTTLS (RFC 3207), implicit TLS (RFC 8314) or, for a relay on loopback, none. The
receipt URL is the customer's revoke-without-login credential, so it goes only to the customer's own address and
is never logged.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid


@dataclass(frozen=True)
class MailServer:
    """Where and how to submit mail (the gateway builds it from its ``[smtp]`` configuration)."""

    host: str
    port: int
    sender: str
    tls: str = "starttls"  # "starttls", "tls" or "none"
    username: str = ""
    password: str = ""
    timeout_seconds: float = 10


@dataclass(frozen=True)
class ReceiptNotice:
    """What the message tells the customer."""

    to: str
    receipt_url: str
    confirmation: str
    client_name: str
    created_local: str  # cds.consent.local_minute: the customer's zone, to the minute
    server_name: str


def receipt_message(notice: ReceiptNotice, sender: str, *, now=None) -> EmailMessage:
    """The message (text/plain, UTF-8). Header values come from configuration and our own records; the client name
    is the third party's, so it is kept out of the headers (no header injection) and only quoted in the body."""
    from datetime import UTC, datetime

    message = EmailMessage()
    message["From"] = Address(notice.server_name, addr_spec=sender)
    message["To"] = Address(addr_spec=notice.to)
    message["Subject"] = f"Your authorization receipt {notice.confirmation}"
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
    message.set_content(
        f"You authorized {notice.client_name} to access your energy data on {notice.created_local}.\n"
        f"\n"
        f"Confirmation number: {notice.confirmation}\n"
        f"\n"
        f"Your receipt: {notice.receipt_url}\n"
        f"\n"
        f"Keep this link: it shows what you shared and lets you revoke the authorization at any time, without\n"
        f"signing in. Anyone with the link can revoke it, so do not forward this message.\n"
        f"\n"
        f"-- {notice.server_name}\n"
    )
    return message


def send(message: EmailMessage, server: MailServer) -> None:
    """Submit ``message``; raises ``smtplib.SMTPException`` or ``OSError`` when the server refuses or is down."""
    context = ssl.create_default_context()
    if server.tls == "tls":
        client: smtplib.SMTP = smtplib.SMTP_SSL(server.host, server.port, timeout=server.timeout_seconds,
                                                context=context)
    else:
        client = smtplib.SMTP(server.host, server.port, timeout=server.timeout_seconds)
    with client:
        if server.tls == "starttls":
            client.starttls(context=context)
        if server.username:
            client.login(server.username, server.password)
        client.send_message(message)
