# Everything from a fresh machine: `make test` and `make demo` create the venv, install
# the ROS 2 wheels and build our interfaces themselves.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ovseg-installed
ROS_STAMP := install/ovseg/share/ovseg/package.xml
INTERFACES := $(wildcard msg/*.msg srv/*.srv) package.xml CMakeLists.txt
# Our interfaces and the ROS 2 wheels on the paths (see tools/ros_env.sh).
ROS_ENV := source tools/ros_env.sh $(VENV) &&

.PHONY: venv ros test demo demo-image bench clean

venv: $(STAMP)

# requirements.txt: the pinned torch pair verified on these machines (ENVIRONMENT.md; the CUDA
# build, also runs on the CPU) and the rest that a robot installs with pip.
$(STAMP): setup.py requirements.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -e '.[test,ros,train,export]'
	touch $(STAMP)

# colcon build of msg/ and srv/ against the wheels (about 20 s), with the ROS packages PyPI lacks
# (launch, launch_ros, message_filters, vision_msgs, ...) from ../shared/third_party/ros when
# that folder exists (about 2 min more); see tools/build_ros.sh.
ros: $(ROS_STAMP)

$(ROS_STAMP): $(STAMP) $(INTERFACES) tools/build_ros.sh tools/fix_ros_wheels.py
	mkdir -p build && tools/build_ros.sh $(VENV) > build/ros-build.log 2>&1 || { tail -40 build/ros-build.log; exit 1; }
	touch $(ROS_STAMP)

test: $(STAMP) $(ROS_STAMP)
	$(ROS_ENV) OVSEG_REQUIRE_ROS=1 $(PY) -m pytest -q test

# The node on a camera stream played through real ROS topics, with a vocabulary change
# half-way; writes overlays, a recording of the outputs and a latency summary.
demo: $(STAMP) $(ROS_STAMP)
	$(ROS_ENV) $(PY) -m ovseg_ros.demo --out out/demo

# The library alone on one image (no ROS).
demo-image: $(STAMP)
	$(VENV)/bin/ovseg segment assets/street.png --preset tiny \
	    --vocab "car; road [stuff]; person,pedestrian; building [stuff]; sky [stuff]; tree" \
	    --out out/demo-image --overlap-threshold 0.0

bench: $(STAMP) $(ROS_STAMP)
	$(PY) bench/classifier.py
	$(ROS_ENV) $(PY) bench/node_overhead.py
	$(PY) bench/evaluation.py
	$(PY) bench/bag.py
	$(PY) bench/shapes.py
	$(PY) bench/geometry.py
	$(PY) bench/postprocess.py
	$(PY) bench/cameras.py
	$(PY) bench/stages.py
	$(PY) bench/export.py --num 100 --rounds 5 --vitb-scenes 3
	$(ROS_ENV) $(PY) bench/soak.py --minutes 30
	$(ROS_ENV) $(PY) bench/soak.py --minutes 10 --cameras 1 --depth --vocab-every 0

clean:
	rm -rf $(VENV) out build install
