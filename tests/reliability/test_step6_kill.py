"""A kill between the DNS switch and the IP reroute of step 6 (issue 7, long): the lab goes through steps 1-5 (with
the customers' fixes), step 6 is SIGKILLed the moment the provider's DNS gives a domain the transit address, and
a re-run completes it. A prober asks every domain for its page every 50 ms, at the address the provider's DNS
gives (the client's for domains on other DNS), from before step 6 to after the re-run: no probe goes unanswered.

It leaves the client reinstalled; its teardown gives the rest of the suite a freshly seeded lab again."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
from conftest import LAB, REPO, run
from faults import ledger, reseed
from hostinglab import demo
from lab_state import http, in_host, playbook

pytestmark = [pytest.mark.lab, pytest.mark.long]


@pytest.fixture(scope="module")
def before_step6(lab):
    run([LAB, "reset"])  # whole steps start from the seeded lab, not from what the modules before left
    for name, step in demo.STEPS:
        if name.startswith("step 6"):
            break
        step(lab)
    yield lab
    reseed(lab)


def resolve(lab, domain: dict) -> str:
    if not domain["provider_dns"]:
        return lab.hosts["client"].public_ipv4[0]
    answer = run(["dig", "+short", f"@{lab.hosts['dns'].ipv4}", domain["name"], "A"], check=False).stdout.split()
    return answer[0] if answer else ""


class Prober(threading.Thread):
    def __init__(self, lab):
        super().__init__(daemon=True)
        self.lab, self.stop, self.probes, self.failures = lab, threading.Event(), 0, []
        self.sites = [(d, s) for a in lab.seed["accounts"].values() for d in a["domains"] for s in a["sites"]
                      if s["domain"] == d["name"]]  # fmt: skip

    def run(self):
        while not self.stop.is_set():
            for domain, site in self.sites:
                address = resolve(self.lab, domain)
                status, page = http(site["domain"], address=address) if address else (0, "")
                self.probes += 1
                if status != 200 or f"<title>{site['title']}</title>" not in page:
                    self.failures.append((round(time.time(), 3), site["domain"], address, status))
            time.sleep(0.05)


def test_a_kill_between_the_dns_switch_and_the_reroute_then_a_rerun(before_step6, record_property):
    lab = before_step6
    transit_ip = lab.hosts["transit"].public_ipv4[0]
    routes_before = in_host("gw", "ip route; ip -6 route").stdout
    prober = Prober(lab)
    prober.start()
    try:
        step6 = subprocess.Popen(["ansible-playbook", "playbooks/step6_reinstall.yml"], cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                 env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")})  # fmt: skip
        alice = {"name": "alice-shop.test", "provider_dns": True}
        deadline, killed = time.monotonic() + 300, False
        while time.monotonic() < deadline and step6.poll() is None:
            if resolve(lab, alice) == transit_ip:
                os.killpg(step6.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)
        output = step6.communicate(timeout=60)[0]
        assert killed, f"step 6 never switched DNS (or ended first):\n{output[-2000:]}"
        # Killed in between: the provider's DNS already names transit, the router still sends the client's
        # addresses to the client.
        assert in_host("gw", "ip route; ip -6 route").stdout == routes_before, "killed after the reroute"
        rerun = playbook("step6_reinstall.yml", check=False)
    finally:
        prober.stop.set()
        prober.join(timeout=30)
    ledger(record_property, "SIGKILL of step 6 between DNS switch and reroute", runs=2,
           converged=rerun.returncode == 0, compared=prober.probes, lost=len(prober.failures))  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert prober.failures == [], f"{len(prober.failures)} of {prober.probes} probes unanswered: {prober.failures[:5]}"
