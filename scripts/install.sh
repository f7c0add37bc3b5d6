#!/usr/bin/env bash
# Installs a built libmultigrid into PREFIX: `make install PREFIX=/usr/local` runs
#   scripts/install.sh PREFIX [TARGET_DIR]     (TARGET_DIR: target/release by default)
# and lays out
#   lib/libmultigrid.so.X.Y.Z, .so.X (the SONAME), .so     lib/libmultigrid.a
#   include/multigrid.h, include/multigrid.hpp
#   lib/pkgconfig/multigrid.pc (shared), multigrid-static.pc (libmultigrid.a + what it needs)
#   lib/cmake/multigrid/multigridConfig.cmake (+ ConfigVersion): multigrid::shared, ::static
#   lib/multigrid/python/multigrid/ (the ctypes package; PYTHONPATH=PREFIX/lib/multigrid/python)
# Everything is relocatable (paths relative to the files themselves) except libtorch's
# directory, which the torch build links by absolute path, as its rpath does.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${1:?usage: scripts/install.sh PREFIX [TARGET_DIR]}
src=${2:-target/release}
for f in libmultigrid.so libmultigrid.a multigrid; do
  [ -e "$src/$f" ] || { echo "install: $src/$f is missing: build first (make release)" >&2; exit 1; }
done
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)

info=$("$src/multigrid" build-info)
version=$(sed -n 's/^version //p' <<<"$info")
static_libs=$(sed -n 's/^static_libs //p' <<<"$info")
major=${version%%.*}

# Each file is written beside its destination and renamed into place: never half a file.
put() { # put MODE SOURCE DEST
  install -m "$1" "$2" "$3.tmp.$$" && mv -f "$3.tmp.$$" "$3"
}
write() { # write DEST < content
  cat >"$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}

lib=$prefix/lib
mkdir -p "$lib/pkgconfig" "$lib/cmake/multigrid" "$prefix/include"
put 755 "$src/libmultigrid.so" "$lib/libmultigrid.so.$version"
ln -sfn "libmultigrid.so.$version" "$lib/libmultigrid.so.$major"
ln -sfn "libmultigrid.so.$major" "$lib/libmultigrid.so"
put 644 "$src/libmultigrid.a" "$lib/libmultigrid.a"
put 644 include/multigrid.h "$prefix/include/multigrid.h"
put 644 bindings/cpp/multigrid.hpp "$prefix/include/multigrid.hpp"

py=$lib/multigrid/python/multigrid
mkdir -p "$py"
for f in bindings/python/multigrid/*.py; do
  put 644 "$f" "$py/$(basename "$f")"
done

write "$lib/pkgconfig/multigrid.pc" <<EOF
prefix=\${pcfiledir}/../..
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: multigrid
Description: Multigrid training of video models: schedule, collation and SlowFast trainer (C API)
Version: $version
Libs: -L\${libdir} -lmultigrid
Cflags: -I\${includedir}
EOF

write "$lib/pkgconfig/multigrid-static.pc" <<EOF
prefix=\${pcfiledir}/../..
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: multigrid-static
Description: libmultigrid.a with the libraries it needs (libtorch, FFmpeg, the Rust runtime's)
Version: $version
Libs: \${libdir}/libmultigrid.a $static_libs
Cflags: -I\${includedir}
EOF

cmake_libs=$(tr ' ' ';' <<<"$static_libs")
write "$lib/cmake/multigrid/multigridConfig.cmake" <<EOF
# multigrid $version: imported targets multigrid::shared and multigrid::static.
get_filename_component(_multigrid_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(multigrid_VERSION "$version")
set(multigrid_INCLUDE_DIRS "\${_multigrid_prefix}/include")
if(NOT TARGET multigrid::shared)
  add_library(multigrid::shared SHARED IMPORTED)
  set_target_properties(multigrid::shared PROPERTIES
    IMPORTED_LOCATION "\${_multigrid_prefix}/lib/libmultigrid.so.$version"
    IMPORTED_SONAME "libmultigrid.so.$major"
    INTERFACE_INCLUDE_DIRECTORIES "\${_multigrid_prefix}/include")
endif()
if(NOT TARGET multigrid::static)
  add_library(multigrid::static STATIC IMPORTED)
  set_target_properties(multigrid::static PROPERTIES
    IMPORTED_LOCATION "\${_multigrid_prefix}/lib/libmultigrid.a"
    IMPORTED_LINK_INTERFACE_LANGUAGES "C"
    INTERFACE_INCLUDE_DIRECTORIES "\${_multigrid_prefix}/include"
    INTERFACE_LINK_LIBRARIES "$cmake_libs")
endif()
unset(_multigrid_prefix)
EOF

write "$lib/cmake/multigrid/multigridConfigVersion.cmake" <<EOF
# Same major version is compatible (the SONAME carries it); a newer minor satisfies an older.
set(PACKAGE_VERSION "$version")
if(NOT PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
elseif(PACKAGE_FIND_VERSION_MAJOR STREQUAL "$major" AND NOT PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
else()
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
endif()
EOF

echo "installed multigrid $version into $prefix"
