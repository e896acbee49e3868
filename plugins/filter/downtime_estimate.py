# Copyright: hosting.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""downtime_estimate: how long an account's databases keep it frozen, by our measured rates and by the provider's
documented rule. Also the shared number checks of the collection's filters."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

# A GB here is 10**9 bytes (the unit of bench/README.md and of the provider's 60 s/GB rule), not 2**30.
BYTES_PER_GB = 10**9
# The provider documents 60 seconds of downtime per GB of databases for its own migrations.
PROVIDER_S_PER_GB = 60
# Seconds per GB of the "dump" copy method account_move runs while the account is frozen, measured in the lab by
# bench/account_move_db.py (bench/README.md: MariaDB 25.3 s/GB at 0.253 GB, PostgreSQL 10.4 s/GB at 1.021 GB, the
# slower of each engine's measured sizes).
MEASURED_S_PER_GB = {"mariadb": 25.3, "postgresql": 10.4}
# Seconds per GB of the "live" method (replicated from the pre-copy on; the freeze only catches up and re-checks what
# changed), measured by bench/account_move_live.py with a writer running (bench/README.md): the slower of each
# engine's two sizes, its downtime over its size - PostgreSQL 0.80 s at 1.096 GB, MariaDB 0.16 s at 1.067 GB.
LIVE_S_PER_GB = {"mariadb": 0.15, "postgresql": 0.73}
ENGINES = tuple(sorted(MEASURED_S_PER_GB))


def non_negative_int(value: Any, what: str) -> int:
    """`value` if it is an integer >= 0 (not a bool); AnsibleFilterError naming `what` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnsibleFilterError(f"{what} must be an integer, got {type(value).__name__} {value!r}")
    if value < 0:
        raise AnsibleFilterError(f"{what} must not be negative, got {value}")
    return int(value)


def non_negative_number(value: Any, what: str) -> float:
    """`value` as a float if it is an int or float >= 0 (not a bool); AnsibleFilterError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AnsibleFilterError(f"{what} must be a number, got {type(value).__name__} {value!r}")
    if not value >= 0:  # also refuses NaN
        raise AnsibleFilterError(f"{what} must be a number >= 0, got {value}")
    return float(value)


def _rates(rates: Any) -> dict[str, float]:
    if rates is None:
        return dict(MEASURED_S_PER_GB)
    if not isinstance(rates, dict):
        raise AnsibleFilterError(f"downtime_estimate: rates must be a dict of engine to seconds per GB, got {rates!r}")
    merged = dict(MEASURED_S_PER_GB)
    for engine, rate in rates.items():
        if engine not in MEASURED_S_PER_GB:
            raise AnsibleFilterError(
                f"downtime_estimate: rates names unknown engine {engine!r} (known: {', '.join(ENGINES)})"
            )
        merged[engine] = non_negative_number(rate, f"downtime_estimate: rates[{engine}]")
    return merged


def _database(index: int, database: Any) -> tuple[str, int]:
    if not isinstance(database, dict):
        raise AnsibleFilterError(f"downtime_estimate: databases[{index}] must be a dict, got {database!r}")
    label = f"databases[{index}]" + (f" ({database['name']})" if database.get("name") else "")
    engine = database.get("engine")
    if engine not in MEASURED_S_PER_GB:
        raise AnsibleFilterError(
            f"downtime_estimate: {label} has unknown engine {engine!r} (known: {', '.join(ENGINES)})"
        )
    return engine, non_negative_int(database.get("size_bytes"), f"downtime_estimate: {label} size_bytes")


def _live_engines(live_engines: Any) -> list[str]:
    if live_engines is None:
        return []
    if not isinstance(live_engines, list) or any(engine not in LIVE_S_PER_GB for engine in live_engines):
        raise AnsibleFilterError(
            f"downtime_estimate: live_engines must be a list of engines ({', '.join(ENGINES)}), got {live_engines!r}"
        )
    return list(live_engines)


def downtime_estimate(
    databases: Any,
    rates: Any = None,
    fixed_s: Any = 2.0,
    provider_s_per_gb: Any = PROVIDER_S_PER_GB,
    live_engines: Any = None,
) -> dict[str, Any]:
    """Total size, the provider's estimate (provider_s_per_gb per GB) and ours (fixed_s + each engine's size times
    its rate: the live method's for live_engines, else the dump method's or `rates`), with per-engine parts, and
    ours again as if every database travelled by dump (estimate_dump_s). Seconds are rounded to 0.1 s, GB to 1 MB."""
    if not isinstance(databases, list):
        raise AnsibleFilterError(f"downtime_estimate: databases must be a list of dicts, got {databases!r}")
    dump_rates = _rates(rates)
    live = _live_engines(live_engines)
    merged = {engine: LIVE_S_PER_GB[engine] if engine in live else rate for engine, rate in dump_rates.items()}
    fixed = non_negative_number(fixed_s, "downtime_estimate: fixed_s")
    provider_rate = non_negative_number(provider_s_per_gb, "downtime_estimate: provider_s_per_gb")
    sizes: dict[str, int] = {}
    for index, database in enumerate(databases):
        engine, size = _database(index, database)
        sizes[engine] = sizes.get(engine, 0) + size
    per_engine = {
        engine: {
            "size_bytes": size,
            "estimate_s": round(size / BYTES_PER_GB * merged[engine], 1),
            "method": "live" if engine in live else "dump",
        }
        for engine, size in sorted(sizes.items())
    }
    total = sum(sizes.values())
    return {
        "size_bytes": total,
        "size_gb": round(total / BYTES_PER_GB, 3),
        "provider_s": round(total / BYTES_PER_GB * provider_rate, 1),
        "estimate_s": round(fixed + sum(size / BYTES_PER_GB * merged[engine] for engine, size in sizes.items()), 1),
        "estimate_dump_s": round(
            fixed + sum(size / BYTES_PER_GB * dump_rates[engine] for engine, size in sizes.items()), 1
        ),
        "per_engine": per_engine,
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"downtime_estimate": downtime_estimate}
