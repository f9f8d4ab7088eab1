"""MAILER_SMTP_URL parsed: where and how the worker reaches the SMTP relay.

The one parser of SMTP URLs: config.py checks the setting with it at start, and the
worker's transport connects with what it returns.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from mailer.flags import parse_flag

SETTING = "MAILER_SMTP_URL"
DEFAULT_TIMEOUT = 30.0

_QUERY_KEYS = ("starttls", "timeout", "verify", "helo")
_HELO_NAME = re.compile(r"^[A-Za-z0-9.\-\[\]:]+$")


def _flag(name: str, value: str) -> bool:
    flag = parse_flag(value)
    if flag is None:
        raise ValueError(f"{SETTING}: ?{name}= takes 1 or 0, not {value!r}")
    return flag


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to reach the SMTP relay, parsed from MAILER_SMTP_URL.

    `verify_certs` (``?verify=0`` turns it off) and `local_hostname` (``?helo=name``, the
    name sent in EHLO; default: this machine's FQDN) extend the URL form of the contract.
    """

    host: str
    port: int
    username: str | None
    # Kept out of repr() so that logging the settings object never leaks it.
    password: str | None = field(repr=False)
    implicit_tls: bool
    starttls: bool
    timeout: float = DEFAULT_TIMEOUT
    verify_certs: bool = True
    local_hostname: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SmtpSettings:
        """Parse ``smtp[s]://[user:pass@]host[:port][?starttls=1&timeout=10&verify=0&helo=name]``.

        User and password are percent-decoded (write ``@`` as ``%40``). Default ports: 25 for
        smtp://, 465 for smtps://. Raises ValueError naming MAILER_SMTP_URL, and never echoing
        the URL (it may hold the password), on anything else.
        """
        if not isinstance(url, str) or not url.strip():
            raise ValueError(f"{SETTING} is empty; expected smtp://host:port")
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{SETTING} is not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            shown = f"{scheme}://" if scheme else "no scheme"
            raise ValueError(f"{SETTING} must start with smtp:// or smtps://, not {shown}")
        if not parts.hostname:
            raise ValueError(f"{SETTING} names no host; expected {scheme}://host:port")
        if parts.path not in ("", "/") or parts.fragment:
            raise ValueError(f"{SETTING} takes no path or #fragment, only ?options")
        if port is None:
            port = 465 if scheme == "smtps" else 25
        elif port == 0:
            raise ValueError(f"{SETTING} has port 0; expected 1-65535")

        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        if username == "" and password is not None:
            raise ValueError(f"{SETTING} has a password but no user name")
        if username == "":
            username = None

        options: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in _QUERY_KEYS:
                known = ", ".join(_QUERY_KEYS)
                raise ValueError(f"{SETTING}: unknown option ?{key}= (known: {known})")
            if key in options:
                raise ValueError(f"{SETTING}: option ?{key}= given twice")
            options[key] = value

        starttls = _flag("starttls", options["starttls"]) if "starttls" in options else False
        if starttls and scheme == "smtps":
            raise ValueError(
                f"{SETTING}: smtps:// is already TLS; ?starttls=1 is for smtp:// (usually port 587)"
            )
        timeout = DEFAULT_TIMEOUT
        if "timeout" in options:
            try:
                timeout = float(options["timeout"])
            except ValueError:
                timeout = math.nan
            if not (math.isfinite(timeout) and timeout > 0):
                raise ValueError(
                    f"{SETTING}: ?timeout= takes a positive number of seconds, "
                    f"not {options['timeout']!r}"
                )
        verify = _flag("verify", options["verify"]) if "verify" in options else True
        helo = options.get("helo") or None
        if helo is not None and not _HELO_NAME.match(helo):
            raise ValueError(f"{SETTING}: ?helo= takes a host name, not {helo!r}")

        return cls(
            host=parts.hostname,
            port=port,
            username=username,
            password=password,
            implicit_tls=scheme == "smtps",
            starttls=starttls,
            timeout=timeout,
            verify_certs=verify,
            local_hostname=helo,
        )

    def redacted(self) -> str:
        """The URL with the password replaced by ``***``: safe for logs and error messages."""
        scheme = "smtps" if self.implicit_tls else "smtp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        userinfo = ""
        if self.username is not None:
            userinfo = quote(self.username, safe="")
            if self.password is not None:
                userinfo += ":***"
            userinfo += "@"
        query = []
        if self.starttls:
            query.append("starttls=1")
        if self.timeout != DEFAULT_TIMEOUT:
            query.append(f"timeout={self.timeout:g}")
        if not self.verify_certs:
            query.append("verify=0")
        if self.local_hostname:
            query.append(f"helo={self.local_hostname}")
        tail = "?" + "&".join(query) if query else ""
        return f"{scheme}://{userinfo}{host}:{self.port}{tail}"
