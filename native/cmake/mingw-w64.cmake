# Cross-compile the shim for 64-bit Windows with mingw-w64 (Debian package
# gcc-mingw-w64-x86-64-win32). Use:
#   cmake -S . -B build-win -DCMAKE_TOOLCHAIN_FILE=native/cmake/mingw-w64.cmake
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(_triplet x86_64-w64-mingw32)

# The -win32 flavour: Win32 threads, so no libwinpthread-1.dll to ship.
find_program(CMAKE_C_COMPILER NAMES ${_triplet}-gcc-win32 ${_triplet}-gcc REQUIRED)
find_program(CMAKE_RC_COMPILER NAMES ${_triplet}-windres)
set(CMAKE_FIND_ROOT_PATH /usr/${_triplet})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)

# Lets CTest run the Windows unit tests under Wine. The caller provides the
# Wine environment (WINEPREFIX ..., see /work/shared/notes/wine.md).
find_program(WINE_EXECUTABLE NAMES wine wine64)
if(WINE_EXECUTABLE)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${WINE_EXECUTABLE})
endif()
