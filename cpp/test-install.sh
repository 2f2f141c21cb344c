#!/usr/bin/env bash
# Build, install into a prefix, and build a participant against the
# installed package both ways (pkg-config and CMake find_package). Then run
# the C++ API tests. Usage: cpp/test-install.sh BUILD_DIR PREFIX
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/cpp}
prefix=${2:-build/cpp-prefix}
cmake -S cpp -B "$build" -DCMAKE_BUILD_TYPE=Release -DMSGFLO_CARGO_TARGET_DIR="$PWD/target" >/dev/null
cmake --build "$build" -j2
cmake --install "$build" --prefix "$prefix" >/dev/null
prefix=$(cd "$prefix" && pwd)
echo "cpp: installed into $prefix: $(cd "$prefix" && find . -type f | sort | tr '\n' ' ')"

# pkg-config, as a user would: g++ -std=c++11 app.cpp $(pkg-config --cflags --libs msgflo)
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
g++ -std=c++11 -Wall -Wextra -pedantic cpp/examples/repeat.cpp $(pkg-config --cflags --libs msgflo) -o "$build/repeat-pkgconfig"
echo "cpp: built $build/repeat-pkgconfig with pkg-config"

# CMake find_package(msgflo)
cmake -S cpp/tests/consumer -B "$build/consumer" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$build/consumer" >/dev/null
echo "cpp: built $build/consumer/repeat with find_package(msgflo)"

"$build/test_msgflo"
