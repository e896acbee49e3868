# The two set-up commands of the README: `make demo` and `make test`. Both run as root on Debian 12 and install
# what they need (Debian packages through lab/lab, the Python tools into .venv).
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
PYTEST_ARGS ?=

.PHONY: demo test test-long lint lab-up lab-down venv

venv: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt awx/install_awx_collection.sh
	@python3 -c 'import ensurepip' 2>/dev/null && command -v shellcheck >/dev/null \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv shellcheck; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-test.txt
	# awx.awx for awx/load_controller.yml (ansible-lint resolves its modules): from PyPI, as Galaxy is unreachable.
	bash awx/install_awx_collection.sh
	touch $@

lab-up: $(STAMP)
	lab/lab up

lab-down:
	lab/lab down

# The main job on the built-in lab: a freshly seeded provider carried through the eight steps (with the fixes its
# users make after step 1's report); ends with the path of the final report.
demo: $(STAMP)
	lab/lab demo

lint: $(STAMP)
	bash tests/static_checks.sh

# Static checks, then the suite against a freshly seeded lab; the lab comes down whatever the outcome.
test: $(STAMP)
	bash tests/static_checks.sh
	lab/lab reset
	status=0; pytest -m "not long" $(PYTEST_ARGS) || status=$$?; lab/lab down || status=1; exit $$status

test-long: $(STAMP)
	status=0; pytest -m long $(PYTEST_ARGS) || status=$$?; lab/lab down || status=1; exit $$status
