"""The hosting.migration lab: a small provider (client, transit, DNS, router, test DB) on one Linux machine."""
