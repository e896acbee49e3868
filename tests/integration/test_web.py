"""The lab's sites as their visitors meet them (issue 18): content rendered from each account's database through its
own PHP-FPM pool or application server, a WordPress login whose session cookie later requests honour, over both
address families of the client's public addresses."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import Cookie, CookieJar

import pytest
from lab_state import NoRedirect, http, https_opener, in_host

pytestmark = pytest.mark.lab

ADDRESSES = ("198.51.100.10", "[2001:db8:77::10]")


@pytest.mark.parametrize("address", ADDRESSES)
def test_each_site_shows_content_from_its_database(lab, address):
    wordpress = lab.seed["accounts"]["alice"]["sites"][0]["wordpress"]
    status, page = http("alice-shop.test", address=address)
    assert status == 200 and "<title>Alice's Shop</title>" in page, page[:300]
    assert wordpress["post"] in page, "the front page does not list the post stored in MariaDB"
    status, page = http("carol-blog.test", address=address)
    assert status == 200 and "<li>Post 1</li>" in page and "by PHP 8.2" in page, page[:300]
    status, page = http("bobs-garden.test", address=address)
    assert status == 200 and "<li>plant 1</li>" in page and "by Python" in page, page[:300]


def visits(page: str) -> int:
    return int(page.split(" visits</p>")[0].rsplit("<p>", 1)[1])


def test_bobs_application_writes_to_postgresql(lab):
    before = visits(http("bobs-garden.test")[1])
    status, page = http("bobs-garden.test", "/visit", data=b"note=from-the-tests")
    assert status == 200 and page.startswith("visit "), (status, page[:300])
    assert visits(http("bobs-garden.test")[1]) == before + 1
    rows = in_host("client", "runuser -u postgres -- psql -tA -d bob_app -c \"SELECT count(*) FROM visits "
                             "WHERE note = 'from-the-tests'\"").stdout.strip()  # fmt: skip
    assert rows == "1"


def test_php_runs_as_each_accounts_own_user(lab):
    http("carol-blog.test")
    http("alice-shop.test")
    users = set(in_host("client", "ps -o user= -C php-fpm8.2").stdout.split())
    assert {"alice", "carol"} <= users, users
    assert in_host("client", "ps -o user= -C gunicorn | sort -u").stdout.split() == ["bob"]


def test_a_wordpress_login_returns_a_session_cookie_that_later_requests_honour(lab):
    wordpress = lab.seed["accounts"]["alice"]["sites"][0]["wordpress"]
    jar = CookieJar()

    opener = https_opener("198.51.100.10", urllib.request.HTTPCookieProcessor(jar), NoRedirect())

    def call(path, data=None):
        request = urllib.request.Request(f"https://alice-shop.test{path}", data=data)
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, response.headers, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read().decode(errors="replace")

    status, headers, _page = call("/wp-admin/")
    assert status == 302 and "wp-login.php" in headers["Location"], "the dashboard answers without a login"
    form = urllib.parse.urlencode(
        {"log": wordpress["admin"], "pwd": wordpress["password"], "wp-submit": "Log In", "testcookie": "1"}
    ).encode()
    jar.set_cookie(
        Cookie(
            0,
            "wordpress_test_cookie",
            "WP Cookie check",
            None,
            False,
            "alice-shop.test",
            True,
            False,
            "/",
            True,
            True,
            None,
            False,
            None,
            None,
            {},
        )  # fmt: skip
    )
    status, headers, _page = call("/wp-login.php", form)
    assert status == 302, status
    assert any(c.name.startswith("wordpress_logged_in_") for c in jar), [c.name for c in jar]
    status, _headers, page = call("/wp-admin/")
    assert status == 200 and "Dashboard" in page, (status, page[:300])
