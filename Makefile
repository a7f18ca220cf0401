# vknet: every target does all the set-up it needs, idempotently, on a fresh machine.
#   make demo   set up, then run the main job on the bundled default (no camera, GPU or downloads)
#   make test   set up, then lint (ruff, mypy) and run the whole test suite
#   make setup  set-up only: .venv with pinned requirements, the ROS 2 message build, the `vknet` command
#   make ros-kit  add the ROS 2 command-line tools (ros2 launch, topic, param, lifecycle...), launch_testing and
#               vision_msgs from ../shared/ros2_cli_kit into .venv, where that kit exists (CI has it)
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.vknet-stamps
# pip prints one "Location ... is ignored" line per package for this machine's optional local indexes.
PIP_QUIET := { grep -v "is ignored: it is neither a file nor a directory" || true; }

KIT ?= ../shared/ros2_cli_kit

.PHONY: setup demo test lint clean gpu-wheels ros-kit

setup: $(STAMP)/editable

$(STAMP)/requirements: requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup: installing pinned requirements into $(VENV) (first time: about a minute)"
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt 2>&1 | $(PIP_QUIET)
	$(BIN)/python tools/fix_rosidl_paths.py
	@mkdir -p $(STAMP) && touch $@

$(STAMP)/messages: $(STAMP)/requirements CMakeLists.txt package.xml $(wildcard msg/*.msg) vknet_ros/__init__.py
	@echo "setup: generating and installing the vknet_ros messages (rosidl, about 10 s)"
	@rm -rf build/cmake && mkdir -p build
	PATH=$(BIN):$$PATH cmake -S . -B build/cmake -DCMAKE_INSTALL_PREFIX=$(abspath $(VENV)) \
	    -DVKNET_INSTALL_PYTHON_SOURCES=OFF -DBUILD_TESTING=OFF -DPython3_EXECUTABLE=$(BIN)/python \
	    > build/cmake.log 2>&1 || { tail -30 build/cmake.log; exit 1; }
	PATH=$(BIN):$$PATH cmake --build build/cmake -j2 >> build/cmake.log 2>&1 || { tail -30 build/cmake.log; exit 1; }
	PATH=$(BIN):$$PATH cmake --install build/cmake >> build/cmake.log 2>&1 || { tail -30 build/cmake.log; exit 1; }
	@touch $@

$(STAMP)/editable: $(STAMP)/messages setup.py pyproject.toml
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation \
	    --config-settings editable_mode=compat -e . 2>&1 | $(PIP_QUIET)
	@touch $@
	@echo "setup: done ($(VENV), command: $(BIN)/vknet)"

demo: setup
	$(BIN)/vknet doctor
	$(BIN)/vknet demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy vknet_ros vknet_model vknet_data vknet_eval training tools vknet_cli.py

test: lint
	$(BIN)/python -m pytest tests

# The tests that need these tools skip with the reason where the kit is absent (a user's fresh clone).
ros-kit: setup
	@if [ -f $(KIT)/install.sh ]; then \
	    echo "ros-kit: installing $(KIT) into $(VENV) (first time: a few minutes, it builds vision_msgs)"; \
	    bash $(KIT)/install.sh --offline $(VENV) > build/ros-kit.log 2>&1 || { tail -30 build/ros-kit.log; exit 1; }; \
	    tail -1 build/ros-kit.log; \
	else \
	    echo "ros-kit: $(KIT) not found: the ros2 launch / launch_testing / vision_msgs tests will skip"; \
	fi

clean:
	rm -rf $(VENV) build

# Wheels the lent GPU machine lacks (Python 3.12 there, no internet): carry build/gpu_wheels to
# `bash benchmarks/gpu_checks.sh`.
gpu-wheels: setup
	$(BIN)/python -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux2014_x86_64 -d build/gpu_wheels pyyaml==6.0.2 tqdm pytest pytest-timeout 2>&1 | $(PIP_QUIET)
	@ls build/gpu_wheels
