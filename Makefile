# `make demo` and `make test` work on a fresh clone: they create .venv and install everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test demo bench clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-ros.txt requirements-ray.txt setup.py package.xml
	@if $(PYTHON) -c 'import rclpy' 2>/dev/null; then \
		echo 'vpr_ros: using the rclpy of the sourced ROS 2 install'; \
		$(PYTHON) -m venv --system-site-packages $(VENV) && \
		$(PY) -m pip install -r requirements.txt -r requirements-ray.txt; \
	else \
		$(PYTHON) -m venv $(VENV) && \
		$(PY) -m pip install -r requirements.txt -r requirements-ray.txt -r requirements-ros.txt; \
	fi
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $@

test: $(STAMP)
	$(PY) -m pytest test $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m vpr_ros.demo

bench: $(STAMP)
	for script in bench/*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
