# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A customer's web site as a visitor's browser sees it, but reached through a given address: TLS with the site's
name as SNI, its certificate verified for that name, then `GET path` with that name as Host. Used to check each
domain through the client server's public IP before DNS points there (ansible's `uri` sends the address it connects
to as SNI, so it cannot do this)."""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import time
from html.parser import HTMLParser
from typing import Any

from ansible_collections.hosting.migration.plugins.module_utils.account import validate_domain

MAX_BODY = 1 << 20
USER_AGENT = "hosting.migration https_probe"
# RFC 1123 host names for `address`; unlike customer domains, a single label ("localhost") and capitals are fine.
_HOST_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST_RE = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
# What a browser puts on the request line: printable ASCII, no spaces, no fragment (it never sends one).
_PATH_RE = re.compile(r"/[\x21-\x22\x24-\x7e]*")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def validate_address(address: object) -> str:
    """Return `address` if it is an IP literal or an RFC 1123 host name, else raise ValueError."""
    if isinstance(address, str):
        try:
            ipaddress.ip_address(address)
            return address
        except ValueError:
            pass
        if len(address) <= 253 and _HOST_RE.fullmatch(address):
            return address
    raise ValueError(f"invalid address {_shown(address)}: expected an IPv4 or IPv6 literal or a host name")


def validate_path(path: object) -> str:
    if not isinstance(path, str) or len(path) > 8192 or not _PATH_RE.fullmatch(path):
        raise ValueError(
            f"invalid path {_shown(path)}: it must start with '/' and hold only printable ASCII without spaces "
            "or '#' (percent-encode anything else)"
        )
    return path


def check_request(address: object, port: object, domains: object, path: object, timeout: object) -> list[str]:
    """Validate the probe's inputs before any connection; the domains to probe, duplicates dropped. ValueError says
    which value is wrong."""
    validate_address(address)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"invalid port {_shown(port)}: expected 1 to 65535")
    if not isinstance(domains, list) or not domains:
        raise ValueError("domains must be a non-empty list of domain names")
    for domain in domains:
        validate_domain(domain)
    validate_path(path)
    if not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"invalid timeout {_shown(timeout)}: expected a number of seconds above 0")
    return list(dict.fromkeys(domains))


def trust_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context that verifies the chain and the host name: trusting only `ca_file` (PEM) if given, else the
    system's trust store. ValueError if `ca_file` cannot be read or holds no certificate."""
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as error:  # before OSError, its base class
        raise ValueError(f"ca_file {ca_file!r} holds no usable PEM certificate: {error.reason or error}") from None
    except FileNotFoundError:
        raise ValueError(f"ca_file {ca_file!r} does not exist") from None
    except OSError as error:
        raise ValueError(f"ca_file {ca_file!r} cannot be read: {error.strerror or error}") from None


class _PinnedHTTPSConnection(http.client.HTTPConnection):
    """HTTP over TLS to `address`, with `host` (the site's name) as SNI and as the name the certificate must hold."""

    def __init__(self, address: str, host: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address, self._context = address, context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        try:
            self.sock = self._context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


class _TitleParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: str | None = None
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and self.title is None:
            self._inside, self.title = True, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._inside = False

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.title += data


def page_title(body: bytes, charset: str | None) -> str | None:
    """The text of the first <title>, unescaped and with its white space collapsed as a browser shows it."""
    try:
        text = body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    parser = _TitleParser()
    parser.feed(text)
    return None if parser.title is None else " ".join(parser.title.split())


def _name(rdns: tuple[Any, ...], *keys: str) -> str | None:
    """The first value of the first of `keys` found in an ssl.getpeercert() subject or issuer."""
    values = dict(pair for rdn in rdns for pair in rdn)
    return next((values[key] for key in keys if key in values), None)


def certificate_summary(cert: dict[str, Any]) -> dict[str, Any]:
    """subject (CN), issuer (CN, else O), not_after (ISO 8601 UTC) and the SAN DNS names of a verified certificate."""
    not_after = time.gmtime(ssl.cert_time_to_seconds(cert["notAfter"]))
    return {
        "subject": _name(cert.get("subject", ()), "commonName"),
        "issuer": _name(cert.get("issuer", ()), "commonName", "organizationName"),
        "not_after": time.strftime("%Y-%m-%dT%H:%M:%SZ", not_after),
        "names": [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"],
    }


def _error_text(error: Exception) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {error.reason or error}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the address: {error.strerror}"
    if isinstance(error, http.client.HTTPException):
        return f"bad HTTP answer: {type(error).__name__} {error}".strip()
    return f"connection failed: {getattr(error, 'strerror', None) or error}"


def probe_site(address: str, port: int, domain: str, path: str, context: ssl.SSLContext, timeout: float) -> dict:
    """GET https://<domain><path> through `address`:`port`, redirects not followed, at most MAX_BODY bytes read.

    Never raises for what the network or the server does: the result's `error` says what went wrong and `status`
    stays -1 if no HTTP answer came.
    """
    result: dict[str, Any] = {"status": -1, "title": None, "error": None, "certificate": None, "location": None}
    connection = _PinnedHTTPSConnection(address, domain, port, context, timeout)
    try:
        connection.connect()
        result["certificate"] = certificate_summary(connection.sock.getpeercert())
        # Host is set by hand: http.client would add ":port" for any port but 80.
        connection.putrequest("GET", path, skip_host=True)
        for header, value in (("Host", domain), ("User-Agent", USER_AGENT), ("Accept", "text/html,*/*")):
            connection.putheader(header, value)
        connection.putheader("Connection", "close")
        connection.endheaders()
        response = connection.getresponse()
        result["status"] = response.status
        if 300 <= response.status < 400:
            result["location"] = response.getheader("Location")
        result["title"] = page_title(response.read(MAX_BODY), response.headers.get_content_charset())
    except (OSError, http.client.HTTPException) as error:
        result["error"] = _error_text(error)
    finally:
        connection.close()
    return result


def site_ok(result: dict) -> bool:
    return result["error"] is None and 200 <= result["status"] <= 399
