from __future__ import annotations

import json

import pytest

from ansible_collections.hosting.migration.plugins.module_utils import reroute
from ansible_collections.hosting.migration.plugins.module_utils.reroute import (
    RECORD_NAME,
    LinuxRouter,
    LocalAddresses,
    RerouteError,
    Rerouter,
    make_backend,
    parse_addresses,
    parse_local_addresses,
    parse_next_hops,
    parse_routes,
    route_command,
)
from ansible_collections.hosting.migration.plugins.module_utils.ssh import SshError, SshResult

# `ip -j -d -4/-6 route show table main` on the lab's gw.
ROUTES4 = json.dumps(
    [
        {"type": "unicast", "dst": "10.77.0.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link",
         "prefsrc": "10.77.0.2", "flags": []},
        {"type": "unicast", "dst": "198.51.100.10", "gateway": "10.77.0.10", "dev": "eth0", "protocol": "boot",
         "scope": "global", "flags": []},
        {"type": "unicast", "dst": "198.51.100.20", "gateway": "10.77.0.11", "dev": "eth0", "protocol": "boot",
         "scope": "global", "flags": []},
    ]
)  # fmt: skip
ROUTES6 = json.dumps(
    [
        {"type": "unicast", "dst": "2001:db8:77::10", "gateway": "fd77::10", "dev": "eth0", "protocol": "boot",
         "scope": "global", "metric": 1024, "flags": [], "pref": "medium"},
        {"type": "unicast", "dst": "fd77::/64", "dev": "eth0", "protocol": "kernel", "scope": "global",
         "metric": 256, "flags": [], "pref": "medium"},
    ]
)  # fmt: skip
ADDR = json.dumps(
    [
        {"ifname": "lo", "addr_info": [
            {"family": "inet", "local": "127.0.0.1", "prefixlen": 8},
            {"family": "inet", "local": "198.51.100.20", "prefixlen": 32},
            {"family": "inet6", "local": "2001:0db8:77::20", "prefixlen": 128},
        ]},
        {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "10.77.0.11", "prefixlen": 24}]},
    ]
)  # fmt: skip
V4, V6 = "198.51.100.10", "2001:db8:77::10"
HOPS = {4: "10.77.0.11", 6: "fd77::11"}


# ---- input ----


def test_parse_addresses_canonical_unique_in_order():
    assert parse_addresses(["2001:DB8:77:0::10", V4, V4]) == [V6, V4]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("198.51.100.0/24", "is a network"),
        ("198.51.100.10/32", "is a network"),
        ("srv1.provider.test", "not an IPv4 or IPv6 address"),
        ("198.51.100.10; reboot", "not an IPv4 or IPv6 address"),
        (" 198.51.100.10", "not an IPv4 or IPv6 address"),
        ("-198.51.100.10", "not an IPv4 or IPv6 address"),
        ("", "not an IPv4 or IPv6 address"),
        (10, "not an IPv4 or IPv6 address"),
        ("127.0.0.1", "cannot be rerouted"),
        ("::1", "cannot be rerouted"),
        ("fe80::1", "cannot be rerouted"),
        ("224.0.0.1", "cannot be rerouted"),
        ("0.0.0.0", "cannot be rerouted"),
        ("::ffff:198.51.100.10", "IPv4-mapped"),
    ],
)
def test_parse_addresses_refuses(value, message):
    with pytest.raises(RerouteError, match=message):
        parse_addresses([value])


def test_parse_addresses_refuses_empty():
    with pytest.raises(RerouteError, match="no address"):
        parse_addresses([])


def test_parse_next_hops():
    assert parse_next_hops({"ipv4": "10.77.0.11", "ipv6": "FD77:0::11"}, [V4, V6]) == HOPS
    assert parse_next_hops({"ipv4": "10.77.0.11", "ipv6": None}, [V4]) == {4: "10.77.0.11"}
    with pytest.raises(RerouteError, match="via.ipv6 is required"):
        parse_next_hops({"ipv4": "10.77.0.11"}, [V4, V6])
    for bad in ("fd77::11", "10.77.0.11 dev lo", "0.0.0.0", "", 5):
        with pytest.raises(RerouteError, match="not a unicast ipv4"):
            parse_next_hops({"ipv4": bad}, [V4])


@pytest.mark.parametrize("name", ["lo; reboot", "", "-lo", "a/b", "x" * 16, "eth0 up", None])
def test_validate_interface_refuses(name):
    with pytest.raises(RerouteError, match="invalid interface name"):
        reroute.validate_interface(name)


# ---- parsing ----


def test_parse_routes_keeps_host_routes_with_their_attributes():
    routes = parse_routes(ROUTES4)
    assert set(routes) == {V4, "198.51.100.20"}
    assert routes[V4] == [
        {"type": "unicast", "dst": V4, "gateway": "10.77.0.10", "dev": "eth0", "protocol": "boot",
         "scope": "global", "flags": []}
    ]  # fmt: skip
    assert list(parse_routes(ROUTES6)) == [V6]
    assert parse_routes("") == {}


@pytest.mark.parametrize("text", ["{", '{"dst": "x"}', "[1]"])
def test_parse_routes_refuses_garbage(text):
    with pytest.raises(RerouteError, match="cannot parse"):
        parse_routes(text)


def test_parse_local_addresses():
    assert parse_local_addresses(ADDR) == {
        "127.0.0.1": "lo",
        "198.51.100.20": "lo",
        "2001:db8:77::20": "lo",
        "10.77.0.11": "eth0",
    }


def test_route_command_is_exact_and_keeps_the_metric():
    assert route_command(parse_routes(ROUTES4)[V4][0]) == (
        "route replace 198.51.100.10/32 via 10.77.0.10 dev eth0 proto boot scope global metric 0".split()
    )
    expected = "route replace 2001:db8:77::10/128 via fd77::10 dev eth0 proto boot scope global metric 1024 pref medium"
    assert route_command(parse_routes(ROUTES6)[V6][0]) == expected.split()
    onlink = {"dst": V4, "gateway": "10.0.0.1", "flags": ["onlink"], "prefsrc": "198.51.100.1"}
    assert route_command(onlink)[-4:] == ["0", "src", "198.51.100.1", "onlink"]


@pytest.mark.parametrize(
    "route",
    [
        {"dst": V4, "gateway": "10.77.0.10 dev lo"},
        {"dst": V4, "gateway": "10.77.0.10", "dev": "eth0\nroute flush all"},
        {"dst": "198.51.100.0/24", "gateway": "10.77.0.10"},
        {"dst": "default", "gateway": "10.77.0.10"},
    ],
)
def test_route_command_refuses_what_ip_batch_would_misread(route):
    with pytest.raises(RerouteError):
        route_command(route)


# ---- the linux backend, with a stub SSH target ----


class FakeTarget:
    host = "10.77.0.2"

    def __init__(self, outputs=None, fail=None):
        self.calls = []
        self.outputs = outputs or {}
        self.fail = fail

    def run(self, argv, input=None, timeout=None):
        self.calls.append((argv, input))
        if self.fail == "ssh":
            raise SshError("SSH to root@10.77.0.2:22 failed: Host key verification failed.")
        if self.fail == "batch" and argv[1] == "-batch":
            return SshResult(1, "", "Command failed -:2")
        key = " ".join(argv[:4])
        return SshResult(0, self.outputs.get(key, ""), "")


def linux(fail=None):
    outputs = {"ip -j -d -4": ROUTES4, "ip -j -d -6": ROUTES6}
    return LinuxRouter(FakeTarget(outputs, fail), HOPS, "gw")


def test_linux_reads_one_route_per_address():
    router = linux()
    current = router.read([V4, V6])
    assert current[V4]["gateway"] == "10.77.0.10" and current[V6]["metric"] == 1024
    assert not router.points_here(V4, current[V4])
    rerouted = router.rerouted(V4, current[V4])
    assert rerouted["gateway"] == "10.77.0.11" and "dev" not in rerouted
    assert router.points_here(V4, rerouted)


def test_linux_refuses_an_address_without_route():
    with pytest.raises(RerouteError, match="no host route for 198.51.100.99"):
        linux().read(["198.51.100.99"])


def test_linux_refuses_two_routes_for_one_address():
    doubled = json.dumps(json.loads(ROUTES6) + [{**json.loads(ROUTES6)[0], "metric": 2048}])
    router = LinuxRouter(FakeTarget({"ip -j -d -6": doubled}), HOPS, "gw")
    with pytest.raises(RerouteError, match="2 host routes"):
        router.read([V6])


def test_linux_applies_every_route_in_one_batch():
    router = linux()
    current = router.read([V4, V6])
    router.apply({a: router.rerouted(a, r) for a, r in current.items()})
    argv, lines = router.target.calls[-1]
    assert argv == ["ip", "-batch", "-"]
    assert lines.splitlines() == [
        "route replace 198.51.100.10/32 via 10.77.0.11 proto boot scope global metric 0",
        "route replace 2001:db8:77::10/128 via fd77::11 proto boot scope global metric 1024 pref medium",
    ]


def test_linux_errors_name_the_router():
    with pytest.raises(RerouteError, match="cannot reach the router gw: SSH"):
        linux("ssh").read([V4])
    router = linux("batch")
    with pytest.raises(RerouteError, match=r"ip -batch - failed on the router gw \(exit 1\)"):
        router.apply({V4: router.rerouted(V4, router.read([V4])[V4])})


def test_make_backend():
    backend = make_backend("linux", {"router": {"host": "10.77.0.2"}, "via": {"ipv4": "10.77.0.11"}}, [V4])
    assert isinstance(backend, LinuxRouter) and backend.next_hops == {4: "10.77.0.11"}
    with pytest.raises(RerouteError, match="unknown backend"):
        make_backend("nope", {}, [V4])
    with pytest.raises(RerouteError, match="router is required"):
        make_backend("linux", {"router": None}, [V4])
    with pytest.raises(RerouteError, match="router: invalid SSH host"):
        make_backend("linux", {"router": {"host": "-oProxyCommand=x"}}, [V4])


# ---- ordering, with stubs ----


class FakeBackend:
    """Deliveries are {"to": side}; `log` records every change in order, shared with FakeLocal."""

    name = "fake"
    where = "fake network"

    def __init__(self, log, to="client", fail_apply=0, answer=True):
        self.log = log
        self.state = {V4: {"to": to}, V6: {"to": to}}
        self.fail_apply = fail_apply  # the n-th apply() fails after changing its first address
        self.applies = 0
        self.answer = answer

    def read(self, addresses):
        return {a: dict(self.state[a]) for a in addresses}

    def points_here(self, address, delivery):
        return delivery["to"] == "transit"

    def rerouted(self, address, delivery):
        return {"to": "transit"}

    def same(self, first, second):
        return first == second

    def apply(self, deliveries):
        self.applies += 1
        for count, (address, delivery) in enumerate(deliveries.items()):
            if self.applies == self.fail_apply and count == 1:
                raise RerouteError("route change failed")
            self.state[address] = dict(delivery)
            self.log.append(("route", address, delivery["to"]))

    def wait(self, deliveries, port, timeout):
        self.log.append(("wait", sorted(deliveries)))
        return dict.fromkeys(deliveries, 0.01) if self.answer else {}

    def describe(self, delivery):
        return f"to {delivery['to']}"


class FakeLocal(LocalAddresses):
    def __init__(self, log, present=(), answers=True):
        self.log = log
        self.addresses = dict.fromkeys(present, "lo")
        # answers: True/False always, or how many attempts fail before the address answers.
        self.attempts = 0

        def answer(address, port):
            self.attempts += 1
            return answers if isinstance(answers, bool) else self.attempts > answers

        super().__init__(run=self.fake_ip, answers=answer)

    def fake_ip(self, argv):
        if argv[:3] == ["ip", "-j", "addr"]:
            info = [{"local": a} for a in self.addresses]
            return 0, json.dumps([{"ifname": "lo", "addr_info": info}]), ""
        address = argv[3].split("/")[0]
        if argv[2] == "add":
            self.addresses[address] = argv[5]
        else:
            del self.addresses[address]
        self.log.append((argv[2], address))
        return 0, "", ""


class FakeJournal:
    def __init__(self):
        self.records = {}
        self.writes = 0

    def read_record(self, name):
        return json.loads(json.dumps(self.records.get(name)))

    def write_record(self, name, data):
        self.writes += 1
        self.records[name] = json.loads(json.dumps(data))

    def delete_record(self, name):
        self.writes += 1
        return self.records.pop(name, None) is not None


def rig(backend_kwargs=None, local_kwargs=None):
    log = []
    backend = FakeBackend(log, **(backend_kwargs or {}))
    local = FakeLocal(log, **(local_kwargs or {}))
    journal = FakeJournal()
    return log, backend, local, journal, Rerouter(backend, local, journal, local_settle=0)


def test_reroute_adds_first_then_routes_then_waits_and_records_the_previous_delivery():
    log, backend, local, journal, rerouter = rig()
    plan = rerouter.plan("rerouted", [V4, V6])
    assert plan.changed and journal.writes == 0  # planning (check mode) writes nothing
    result = rerouter.execute(plan)
    assert log == [
        ("add", V4),
        ("add", V6),
        ("route", V4, "transit"),
        ("route", V6, "transit"),
        ("wait", [V4, V6]),
    ]
    assert result["answered_s"] == {V4: 0.01, V6: 0.01}
    entries = journal.records[RECORD_NAME]["entries"]
    assert entries[V4] == {"previous": {"to": "client"}, "added": True, "interface": "lo"}
    again = rerouter.plan("rerouted", [V4, V6])
    assert not again.changed


def test_restore_routes_back_first_then_removes_only_what_it_added():
    log, backend, local, journal, rerouter = rig(local_kwargs={"present": [V6]})
    rerouter.execute(rerouter.plan("rerouted", [V4, V6]))
    assert journal.records[RECORD_NAME]["entries"][V6]["added"] is False
    log.clear()
    rerouter.execute(rerouter.plan("restored", [V4, V6]))
    assert log == [("route", V4, "client"), ("route", V6, "client"), ("wait", [V4, V6]), ("del", V4)]
    assert set(local.addresses) == {V6}
    assert RECORD_NAME not in journal.records
    assert not rerouter.plan("restored", [V4, V6]).changed


def test_restore_of_one_address_keeps_the_others_record():
    log, backend, local, journal, rerouter = rig()
    rerouter.execute(rerouter.plan("rerouted", [V4, V6]))
    rerouter.execute(rerouter.plan("restored", [V4]))
    assert list(journal.records[RECORD_NAME]["entries"]) == [V6]
    assert backend.state == {V4: {"to": "client"}, V6: {"to": "transit"}}


def test_restore_without_record_refuses_a_route_that_points_here():
    log, backend, local, journal, rerouter = rig({"to": "transit"})
    with pytest.raises(RerouteError, match="no record of its previous route"):
        rerouter.plan("restored", [V4])


def test_reroute_of_an_address_already_here_without_record_warns_and_records_nothing():
    log, backend, local, journal, rerouter = rig({"to": "transit"}, {"present": [V4]})
    plan = rerouter.plan("rerouted", [V4])
    assert not plan.changed and plan.warnings


def test_no_route_moves_when_the_address_does_not_answer_here():
    log, backend, local, journal, rerouter = rig(local_kwargs={"answers": False})
    with pytest.raises(RerouteError, match="does not answer on port 80 on this server within 0 s"):
        rerouter.execute(rerouter.plan("rerouted", [V4, V6]))
    assert backend.state == {V4: {"to": "client"}, V6: {"to": "client"}}
    assert log == [("add", V4), ("add", V6), ("del", V6), ("del", V4)]
    assert RECORD_NAME not in journal.records


def test_an_address_that_answers_here_after_a_moment_is_rerouted():
    log, backend, local, journal, _rerouter = rig(local_kwargs={"answers": 3})
    now = [0.0]
    rerouter = Rerouter(backend, local, journal, local_settle=5, clock=lambda: now[0],
                        sleep=lambda s: now.__setitem__(0, now[0] + s))  # fmt: skip
    rerouter.execute(rerouter.plan("rerouted", [V4]))
    assert backend.state[V4] == {"to": "transit"} and local.attempts == 4


def test_an_address_that_never_answers_here_fails_after_the_grace_and_says_where_it_is():
    log, backend, local, journal, _rerouter = rig(local_kwargs={"answers": False})
    now = [0.0]
    rerouter = Rerouter(backend, local, journal, local_settle=5, clock=lambda: now[0],
                        sleep=lambda s: now.__setitem__(0, now[0] + s))  # fmt: skip
    with pytest.raises(RerouteError, match=r"within 5 s \(configured on lo\): the route stays"):
        rerouter.execute(rerouter.plan("rerouted", [V4]))
    assert backend.state[V4] == {"to": "client"} and 45 <= local.attempts <= 52


def test_a_route_change_failing_halfway_switches_back():
    log, backend, local, journal, rerouter = rig({"fail_apply": 1})
    with pytest.raises(RerouteError, match="route change failed; the previous routes are back"):
        rerouter.execute(rerouter.plan("rerouted", [V4, V6]))
    # V4 was switched, then every address put back (V6's replace is a no-op): each one always had a side answering.
    assert [entry for entry in log if entry[0] == "route"] == [
        ("route", V4, "transit"),
        ("route", V4, "client"),
        ("route", V6, "client"),
    ]
    assert backend.state == {V4: {"to": "client"}, V6: {"to": "client"}}
    assert local.addresses == {} and RECORD_NAME not in journal.records


def test_no_answer_through_the_new_route_switches_back():
    log, backend, local, journal, rerouter = rig({"answer": False})
    with pytest.raises(RerouteError, match="did not answer .* the previous routes are back"):
        rerouter.execute(rerouter.plan("rerouted", [V4, V6]))
    assert backend.state == {V4: {"to": "client"}, V6: {"to": "client"}}
    assert local.addresses == {}


def test_a_failed_restore_keeps_the_addresses_and_the_record():
    log, backend, local, journal, rerouter = rig()
    rerouter.execute(rerouter.plan("rerouted", [V4, V6]))
    backend.answer = False
    with pytest.raises(RerouteError, match="did not answer"):
        rerouter.execute(rerouter.plan("restored", [V4, V6]))
    assert backend.state == {V4: {"to": "transit"}, V6: {"to": "transit"}}
    assert set(local.addresses) == {V4, V6}
    assert set(journal.records[RECORD_NAME]["entries"]) == {V4, V6}


def test_a_record_of_another_backend_is_refused():
    log, backend, local, journal, rerouter = rig()
    journal.records[RECORD_NAME] = {"version": 1, "backend": "linux", "entries": {}}
    with pytest.raises(RerouteError, match="written by backend 'linux'"):
        rerouter.plan("rerouted", [V4])


def test_summary_and_diff_views():
    log, backend, local, journal, rerouter = rig(local_kwargs={"present": [V6]})
    plan = rerouter.plan("rerouted", [V4, V6])
    assert rerouter.summary(plan)["routes"][V4] == {"from": "to client", "to": "to transit"}
    assert rerouter.summary(plan)["add_addresses"] == [V4]
    assert rerouter.state_view(plan, after=False) == {
        "routes": {V4: "to client", V6: "to client"},
        "local_addresses": [V6],
    }
    assert rerouter.state_view(plan, after=True)["local_addresses"] == sorted([V4, V6])
