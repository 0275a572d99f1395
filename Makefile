# kiln: the two commands a newcomer needs (README.md):
#   make demo   installs what is missing, builds, and runs kiln-demo
#   make test   installs what is missing, builds, and runs the test suite
BUILD ?= build
JOBS ?= $(shell nproc)
# Release: debug info was 97% of a RelWithDebInfo build's 5.5 GB (every test links LibTorch-heavy
# objects), enough to fill CI's disk. For a debugger: make test CMAKE_FLAGS=-DCMAKE_BUILD_TYPE=RelWithDebInfo
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: demo test setup configure build clean

setup:
	@scripts/setup.sh

configure: setup
	@cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS) > $(BUILD).configure.log 2>&1 \
	  || (cat $(BUILD).configure.log; exit 1)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: configure
	cmake --build $(BUILD) -j $(JOBS) --target kiln-demo
	./$(BUILD)/integrations/kiln-demo

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD) $(BUILD).configure.log
