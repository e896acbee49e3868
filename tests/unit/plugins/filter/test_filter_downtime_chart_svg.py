"""downtime_chart_svg: a well-formed, self-contained SVG with its points, axes, legend and escaped names."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hosting.migration.plugins.filter.downtime_chart_svg import (
    FilterModule,
    downtime_chart_svg,
    nice_step,
)

NS = {"svg": "http://www.w3.org/2000/svg"}
ROWS = [
    {"account": "alice", "db_bytes": 300_000_000, "downtime_step4_s": 9.1, "downtime_step7_s": 8.0},
    {"account": "bob", "db_bytes": 1_200_000_000, "downtime_step4_s": 30.2, "downtime_step7_s": 28.0},
    {"account": "carol", "db_bytes": 50_000_000, "downtime_step4_s": 3.1, "downtime_step7_s": None},
    {"account": "dave", "db_bytes": None, "downtime_step4_s": 2.0, "downtime_step7_s": 2.0},
]


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def texts(root: ET.Element, cls: str) -> list[str]:
    return [t.text for t in root.iterfind(f".//svg:text[@class='{cls}']", NS)]


def test_points_per_step_with_tooltips_in_gb():
    root = parse(downtime_chart_svg(ROWS))
    step4 = root.findall(".//svg:g[@class='points']/svg:circle", NS)
    step7 = root.findall(".//svg:g[@class='points']/svg:rect", NS)
    assert [c.get("data-account") for c in step4] == ["alice", "bob", "carol"]
    assert [r.get("data-account") for r in step7] == ["alice", "bob"]
    assert step4[1].find("svg:title", NS).text == "bob: step 4, 1.200 GB of databases, 30.2 s"
    assert texts(root, "x-label") == ["database size (GB)"]
    assert texts(root, "y-label") == ["downtime (s)"]
    assert texts(root, "x-tick") == ["0.0", "0.5", "1.0", "1.5"]
    assert texts(root, "y-tick") == ["0", "10", "20", "30", "40"]
    assert texts(root, "label") == ["alice", "bob", "carol"]
    assert texts(root, "note") == ["1 account(s) without a database size or downtime are not plotted"]
    legend = [t.text for t in root.iterfind(".//svg:g[@class='legend']/svg:text", NS)]
    assert legend == ["step 4 (to the transit server)", "step 7 (back to the client server)",
                      "provider's documented 60 s/GB"]  # fmt: skip


def test_point_positions_follow_the_axes():
    root = parse(downtime_chart_svg(ROWS))
    bob = root.findall(".//svg:circle[@data-account='bob']", NS)[0]
    # Plot area: x 70..700 for 0..1.5 GB, y 380..40 for 0..40 s.
    assert float(bob.get("cx")) == pytest.approx(70 + 1.2 / 1.5 * 630, abs=0.1)
    assert float(bob.get("cy")) == pytest.approx(380 - 30.2 / 40 * 340, abs=0.1)


def test_provider_line_leaves_the_plot_at_its_top():
    root = parse(downtime_chart_svg(ROWS))
    line = root.find(".//svg:line[@class='provider']", NS)
    # 60 s/GB reaches the top (40 s) at 40/60 GB, well before 1.5 GB.
    assert (float(line.get("x1")), float(line.get("y1"))) == (70, 380)
    assert float(line.get("x2")) == pytest.approx(70 + 40 / 60 / 1.5 * 630, abs=0.1)
    assert float(line.get("y2")) == pytest.approx(40, abs=0.1)


def test_small_databases_in_mb():
    root = parse(downtime_chart_svg([{"account": "alice", "db_bytes": 40_000_000, "downtime_step7_s": 2.5}]))
    assert texts(root, "x-label") == ["database size (MB)"]
    assert texts(root, "x-tick")[-1] == "40"
    assert root.find(".//svg:rect[@data-account='alice']/svg:title", NS).text.startswith("alice: step 7, 40.000 MB")


def test_names_are_escaped():
    svg = downtime_chart_svg([{"account": 'x<&>"y', "db_bytes": 1, "downtime_step4_s": 1}])
    assert 'x<&>"y' not in svg
    root = parse(svg)
    assert texts(root, "label") == ['x<&>"y']
    assert root.find(".//svg:circle", NS).get("data-account") == 'x<&>"y'


def test_no_data_is_still_a_chart():
    root = parse(downtime_chart_svg([]))
    assert texts(root, "note") == ["no account has a database size and a downtime yet"]
    assert root.find(".//svg:line[@class='provider']", NS) is not None


def test_many_accounts_are_named_in_tooltips_only():
    rows = [{"account": f"user{i}", "db_bytes": i * 10**6, "downtime_step4_s": i} for i in range(20)]
    root = parse(downtime_chart_svg(rows))
    assert len(root.findall(".//svg:circle[@class='step4']", NS)) == 20
    assert texts(root, "label") == []


def test_nice_steps():
    assert [nice_step(span) for span in (1, 7, 35, 0.3, 1200)] == [0.2, 2, 10, 0.1, 500]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("alice", "rows must be a list"),
        ([{"db_bytes": 1}], r"rows\[0\] must be a dict with an 'account' string"),
        ([{"account": "alice", "db_bytes": -1}], r"rows\[0\] \(alice\) db_bytes must not be negative"),
        ([{"account": "alice", "downtime_step4_s": "3"}], "downtime_step4_s must be a number"),
    ],
)
def test_bad_input_is_refused(rows, message):
    with pytest.raises(AnsibleFilterError, match=message):
        downtime_chart_svg(rows)


def test_registered_under_its_name():
    assert FilterModule().filters() == {"downtime_chart_svg": downtime_chart_svg}
