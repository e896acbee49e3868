"""https_probe against real HTTPS servers in threads (127.0.0.1 and ::1) with a throwaway CA: SNI and Host are the
domain while the connection goes to the address, the certificate is verified for the domain, redirects are reported,
and bad input is refused before any connection. The module itself runs here too (through ansible's
patch_module_args), against the same servers."""

from __future__ import annotations

import datetime
import json
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ansible.module_utils.testing import patch_module_args
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.hosting.migration.plugins.module_utils import https_probe
from ansible_collections.hosting.migration.plugins.modules import https_probe as https_probe_module

DOMAIN = "shop.example.test"
NOT_AFTER = datetime.datetime(2031, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
PAGE = b"<html><head><title>Alice&#039;s Shop</title></head></html>"


def _certificate(subject_cn, issuer_name, public_key, signing_key, *, ca, names=()):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throwaway CA and a certificate for DOMAIN and www.DOMAIN signed by it, as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hosting Test CA")])
    ca = _certificate("Hosting Test CA", ca_name, ca_key.public_key(), ca_key, ca=True)
    cert = _certificate(DOMAIN, ca_name, key.public_key(), ca_key, ca=False, names=(DOMAIN, f"www.{DOMAIN}"))
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return {name: str(path) for name, path in paths.items()}


class _Handler(BaseHTTPRequestHandler):
    def setup(self):
        # TLS in the connection's own thread: a client that gives up mid-handshake does not hold up the others.
        self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get_all("Host")))
        if self.path == "/old":
            self.send_response(301)
            self.send_header("Location", f"https://{DOMAIN}/new")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin  # the base class names it so
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host, family, pki):
        self.address_family = family
        self.connections, self.requests, self.sni = 0, [], []
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(pki["cert"], pki["key"])
        self.tls.sni_callback = lambda _sock, name, _context: self.sni.append(name)
        super().__init__((host, 0), _Handler)

    def get_request(self):
        self.connections += 1
        return super().get_request()

    def handle_error(self, request, client_address):
        pass  # failed handshakes are what several tests provoke


def _serve(host, family, pki):
    server = _Server(host, family, pki)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(scope="module", params=["127.0.0.1", "::1"])
def server(request, pki):
    if request.param == "::1" and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    family = socket.AF_INET6 if ":" in request.param else socket.AF_INET
    running = _serve(request.param, family, pki)
    yield running
    running.shutdown()
    running.server_close()


def probe(server, domain=DOMAIN, path="/", ca_file=None, timeout=5.0):
    address, port = server.server_address[:2]
    context = https_probe.trust_context(ca_file)
    return https_probe.probe_site(address, port, domain, path, context, timeout)


def test_a_domain_of_the_certificate_is_fetched_through_the_address(server, pki):
    result = probe(server, ca_file=pki["ca"])
    assert result == {
        "status": 200,
        "title": "Alice's Shop",
        "error": None,
        "location": None,
        "certificate": {
            "subject": DOMAIN,
            "issuer": "Hosting Test CA",
            "not_after": "2031-01-02T03:04:05Z",
            "names": [DOMAIN, f"www.{DOMAIN}"],
        },
    }
    assert https_probe.site_ok(result)
    # The server saw the domain, not the address, as SNI and as the only Host header.
    assert server.sni[-1] == DOMAIN
    assert server.requests[-1] == ("/", [DOMAIN])


def test_a_domain_not_in_the_certificate_fails_verification(server, pki):
    result = probe(server, domain="other.example.test", ca_file=pki["ca"])
    assert result["status"] == -1 and result["certificate"] is None and result["title"] is None
    assert result["error"].startswith("certificate verify failed:")
    assert "other.example.test" in result["error"]
    assert not https_probe.site_ok(result)


def test_without_ca_file_the_system_store_does_not_trust_the_test_ca(server):
    result = probe(server)
    assert result["status"] == -1
    assert result["error"].startswith("certificate verify failed:")


def test_a_redirect_is_reported_not_followed(server, pki):
    seen = len(server.requests)
    result = probe(server, path="/old", ca_file=pki["ca"])
    assert result["status"] == 301 and result["location"] == f"https://{DOMAIN}/new" and result["error"] is None
    assert https_probe.site_ok(result)
    assert server.requests[seen:] == [("/old", [DOMAIN])]


def test_a_closed_port_is_refused(pki):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    context = https_probe.trust_context(pki["ca"])
    result = https_probe.probe_site("127.0.0.1", port, DOMAIN, "/", context, 5.0)
    assert result["status"] == -1 and result["error"] == "connection refused"


def test_a_server_that_never_answers_times_out(pki):
    with socket.socket() as silent:  # accepts TCP (the kernel's backlog) but never speaks TLS
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        context = https_probe.trust_context(pki["ca"])
        result = https_probe.probe_site("127.0.0.1", silent.getsockname()[1], DOMAIN, "/", context, 0.3)
    assert result["status"] == -1 and result["error"] == "timed out"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("domains", ["a.test; rm -rf /"], "invalid domain 'a.test; rm -rf /'"),
        ("domains", ["../x"], "invalid domain '../x'"),
        ("domains", [""], "invalid domain ''"),
        ("domains", ["a" * 300], "invalid domain 'aaaa"),
        ("domains", [DOMAIN, "Shop.Example.Test"], "invalid domain 'Shop.Example.Test'"),
        ("domains", [], "domains must be a non-empty list"),
        ("path", "/x\r\nHost: evil", "invalid path '/x\\r\\nHost: evil'"),
        ("path", "x", "invalid path 'x'"),
        ("path", "/a b", "invalid path '/a b'"),
        ("address", "127.0.0.1; id", "invalid address '127.0.0.1; id'"),
        ("address", "-h", "invalid address '-h'"),
        ("port", 0, "invalid port 0"),
        ("port", 65536, "invalid port 65536"),
        ("timeout", 0.0, "invalid timeout 0.0"),
    ],
)
def test_bad_input_is_refused_naming_the_value(field, value, message):
    request = {"address": "127.0.0.1", "port": 443, "domains": [DOMAIN], "path": "/", "timeout": 10.0}
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        https_probe.check_request(**{**request, field: value})


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "2001:db8::10", "localhost", "srv1.provider.test"])
def test_addresses_and_host_names_are_accepted(address):
    assert https_probe.check_request(address, 8443, [DOMAIN, DOMAIN, f"www.{DOMAIN}"], "/a?b=c&d=%20", 1) == [
        DOMAIN,
        f"www.{DOMAIN}",
    ]


def test_an_unusable_ca_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        https_probe.trust_context(str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="cannot be read: Is a directory"):
        https_probe.trust_context(str(tmp_path))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="holds no usable PEM certificate"):
        https_probe.trust_context(str(tmp_path / "junk.pem"))


@pytest.mark.parametrize(
    "body, charset, title",
    [
        (b"<title>Alice&#039;s Shop</title>", None, "Alice's Shop"),
        (b"<TITLE>\n  Caf\xe9 &amp;\n Bar </TITLE><title>second</title>", "latin-1", "Caf\xe9 & Bar"),
        (b"<title>Caf\xc3\xa9</title>", "no-such-charset", "Caf\xe9"),
        (b"<title></title>", None, ""),
        (b"<html><body>no title</body></html>", None, None),
    ],
)
def test_page_title(body, charset, title):
    assert https_probe.page_title(body, charset) == title


def run_module(capsys, check_mode=False, **args):
    """Run the module's main() as ansible would; its exit code and JSON result."""
    with patch_module_args({**args, "_ansible_check_mode": check_mode}), pytest.raises(SystemExit) as exited:
        https_probe_module.main()
    return exited.value.code, json.loads(capsys.readouterr().out)


def test_the_module_probes_in_check_mode_and_changes_nothing(server, pki, capsys):
    address, port = server.server_address[:2]
    code, result = run_module(
        capsys, check_mode=True, address=address, port=port, domains=[DOMAIN, f"www.{DOMAIN}"], ca_file=pki["ca"]
    )
    assert code == 0 and result["changed"] is False and result["ok"] is True
    assert [site["status"] for site in result["sites"].values()] == [200, 200]
    assert result["sites"][DOMAIN]["title"] == "Alice's Shop"


def test_one_failing_domain_makes_the_module_not_ok_without_failing(server, pki, capsys):
    address, port = server.server_address[:2]
    code, result = run_module(capsys, address=address, port=port, domains=[DOMAIN, "other.example.test"],
                              ca_file=pki["ca"])  # fmt: skip
    assert code == 0 and result["changed"] is False and result["ok"] is False and not result.get("failed")
    assert result["sites"][DOMAIN]["error"] is None
    assert "certificate verify failed" in result["sites"]["other.example.test"]["error"]


@pytest.mark.parametrize(
    "args, message",
    [
        ({"domains": ["a.test; rm -rf /"]}, "invalid domain 'a.test; rm -rf /'"),
        ({"domains": ["../x"]}, "invalid domain '../x'"),
        ({"domains": [""]}, "invalid domain ''"),
        ({"domains": ["a" * 300]}, "invalid domain 'aaaa"),
        ({"domains": [DOMAIN, "../x"]}, "invalid domain '../x'"),
        ({"domains": []}, "domains must be a non-empty list"),
        ({"path": "/x\r\nHost: evil"}, "invalid path '/x\\r\\nHost: evil'"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file '/nonexistent/ca.pem' does not exist"),
    ],
)
def test_the_module_refuses_bad_input_before_any_connection(server, pki, capsys, args, message):
    address, port = server.server_address[:2]
    before = server.connections
    code, result = run_module(capsys, **{"address": address, "port": port, "domains": [DOMAIN], **args})
    assert code == 1 and result["failed"] is True and result["msg"].startswith(message)
    # Once a probe of our own is answered, the server has accepted every connection made before it: none but ours.
    assert probe(server, ca_file=pki["ca"])["status"] == 200
    assert server.connections == before + 1
