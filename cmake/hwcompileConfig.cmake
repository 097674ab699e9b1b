# find_package(hwcompile): compile models at build time and link them into C/C++ targets.
#
#   hwcompile_add_model(<name> MODEL net.onnx [TARGET cpu] [PASSES p1 p2 ...] [DB dir]
#                       [WEIGHTS embedded|file] [EMIT c-library|c-standalone] [CHECKS]
#                       [OPTIONS extra compile options ...])
#
# EMIT c-library (the default) defines the library target <name> (static archive, linked
# whole-archive automatically, with the TVM runtime) and the header <name>.h. With a cross
# toolchain file (cmake/toolchains/), TARGET cpu compiles for CMAKE_SYSTEM_PROCESSOR.
# EMIT c-standalone defines <name> as a plain static library built from the generated C99
# sources by this project's C compiler: no TVM runtime, no C++, so a bare-metal toolchain
# (cmake/toolchains/arm-none-eabi.cmake, CMAKE_SYSTEM_NAME Generic) builds it; CHECKS keeps
# the kernels' argument checks. The model is recompiled only when the model file changes.
#
# Cache variables:
#   HWCOMPILE_PYTHON            the Python that has hwcompile installed
#   HWCOMPILE_TVM_RUNTIME_DIR   a directory with libtvm_runtime.so and libtvm_ffi.so; by
#                               default the ones in the Python wheels (host architecture).
# Result: hwcompile_FOUND, hwcompile_RUNTIME_FOUND (false when cross compiling without a
# runtime for the device: libraries still build, applications cannot link).
cmake_minimum_required(VERSION 3.24)  # $<LINK_LIBRARY:WHOLE_ARCHIVE,...>

get_filename_component(_hwcompile_root "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
find_program(HWCOMPILE_PYTHON NAMES python3 python
             HINTS "${_hwcompile_root}/.venv/bin" ENV VIRTUAL_ENV PATH_SUFFIXES bin
             DOC "Python interpreter with hwcompile installed")
set(HWCOMPILE_TVM_RUNTIME_DIR "$ENV{HWCOMPILE_TVM_RUNTIME_DIR}" CACHE PATH
    "directory with libtvm_runtime.so and libtvm_ffi.so (default: from the Python wheels)")

set(_hwcompile_info "${CMAKE_BINARY_DIR}/hwcompile-info.cmake")
execute_process(
  COMMAND "${CMAKE_COMMAND}" -E env "HWCOMPILE_TVM_RUNTIME_DIR=${HWCOMPILE_TVM_RUNTIME_DIR}"
          "${HWCOMPILE_PYTHON}" -m hwcompile.embed cmake-info
  OUTPUT_FILE "${_hwcompile_info}" ERROR_VARIABLE _hwcompile_error RESULT_VARIABLE _hwcompile_rc)
if(NOT _hwcompile_rc EQUAL 0)
  message(FATAL_ERROR "hwcompile: '${HWCOMPILE_PYTHON} -m hwcompile.embed' failed: "
                      "${_hwcompile_error}Set HWCOMPILE_PYTHON to a Python with hwcompile "
                      "installed (pip install -e <hwcompile>).")
endif()
include("${_hwcompile_info}")

# A bare-metal system (no operating system, CMAKE_SYSTEM_NAME Generic) has no TVM runtime
# and may have no C++ library: only EMIT c-standalone models.
set(_hwcompile_bare_metal FALSE)
if(CMAKE_SYSTEM_NAME STREQUAL "Generic")
  set(_hwcompile_bare_metal TRUE)
endif()

get_property(_hwcompile_languages GLOBAL PROPERTY ENABLED_LANGUAGES)
if(NOT "CXX" IN_LIST _hwcompile_languages AND NOT _hwcompile_bare_metal)
  enable_language(CXX)  # the model glue is C++: its runtime library links every consumer
endif()

set(hwcompile_RUNTIME_FOUND FALSE)
if(_hwcompile_bare_metal)
  message(STATUS "hwcompile: bare-metal build (${CMAKE_SYSTEM_PROCESSOR}): EMIT c-standalone "
                 "models only")
elseif(CMAKE_CROSSCOMPILING AND NOT HWCOMPILE_TVM_RUNTIME_DIR)
  message(STATUS "hwcompile: cross compiling for ${CMAKE_SYSTEM_PROCESSOR} without a TVM "
                 "runtime for it: model libraries build, applications cannot link "
                 "(set HWCOMPILE_TVM_RUNTIME_DIR)")
else()
  foreach(_lib IN ITEMS HWCOMPILE_TVM_RUNTIME_LIBRARY HWCOMPILE_TVM_FFI_LIBRARY)
    if(NOT EXISTS "${${_lib}}")
      message(FATAL_ERROR "hwcompile: TVM runtime library not found: ${${_lib}}. Install "
                          "apache-tvm into ${HWCOMPILE_PYTHON}, or set HWCOMPILE_TVM_RUNTIME_DIR "
                          "to a directory with libtvm_runtime.so and libtvm_ffi.so.")
    endif()
  endforeach()
  if(NOT TARGET hwcompile::tvm_runtime)
    add_library(hwcompile::tvm_ffi SHARED IMPORTED)
    set_target_properties(hwcompile::tvm_ffi PROPERTIES
      IMPORTED_LOCATION "${HWCOMPILE_TVM_FFI_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${HWCOMPILE_TVM_INCLUDE_DIRS}")
    add_library(hwcompile::tvm_runtime SHARED IMPORTED)
    set_target_properties(hwcompile::tvm_runtime PROPERTIES
      IMPORTED_LOCATION "${HWCOMPILE_TVM_RUNTIME_LIBRARY}"
      INTERFACE_LINK_LIBRARIES hwcompile::tvm_ffi)
  endif()
  set(hwcompile_RUNTIME_FOUND TRUE)
endif()

# cpu:<arch> for a cross toolchain's processor (the triples targets/cpu/target.py knows; its armv7
# target uses the hard-float ABI Debian's gnueabihf toolchain links).
function(_hwcompile_target_spec spec out)
  if(spec STREQUAL "cpu" AND CMAKE_CROSSCOMPILING)
    if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64)$")
      set(spec "cpu:aarch64")
    elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^armv?7")
      set(spec "cpu:armv7")
    else()
      set(spec "cpu:${CMAKE_SYSTEM_PROCESSOR}")
    endif()
  endif()
  set(${out} "${spec}" PARENT_SCOPE)
endfunction()

# The `hwcompile compile` arguments both kinds share: model, target, the artifact
# <name>.hwc in the binary directory, what to emit, the C name, the caller's PASSES.
function(_hwcompile_compile_args name model spec emit out)
  set(args "${model}" --target "${spec}" --output "${CMAKE_CURRENT_BINARY_DIR}/${name}.hwc"
           --emit ${emit} --c-name "${name}")
  if(ARG_PASSES)
    list(JOIN ARG_PASSES "," passes)
    list(APPEND args --passes "${passes}")
  endif()
  set(${out} "${args}" PARENT_SCOPE)
endfunction()

function(hwcompile_add_model name)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "CHECKS" "MODEL;TARGET;DB;WEIGHTS;EMIT" "PASSES;OPTIONS")
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "hwcompile_add_model(${name}): unknown arguments ${ARG_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT ARG_MODEL)
    message(FATAL_ERROR "hwcompile_add_model(${name}): MODEL <file.onnx> is required")
  endif()
  if(NOT name MATCHES "^[a-z_][a-z0-9_]*$")
    message(FATAL_ERROR "hwcompile_add_model(${name}): the name prefixes C functions; use "
                        "lower-case letters, digits and '_'")
  endif()
  get_filename_component(model "${ARG_MODEL}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  if(NOT ARG_TARGET)
    set(ARG_TARGET cpu)
  endif()
  if(NOT ARG_EMIT)
    set(ARG_EMIT c-library)
  endif()
  if(ARG_EMIT STREQUAL "c-standalone")
    # Portable C: the artifact's own library (the reference it is checked against) stays a
    # build for this host.
    _hwcompile_add_standalone(${name} "${model}" "${ARG_TARGET}")
    return()
  elseif(NOT ARG_EMIT STREQUAL "c-library")
    message(FATAL_ERROR "hwcompile_add_model(${name}): EMIT ${ARG_EMIT} is unknown; use "
                        "c-library or c-standalone")
  elseif(_hwcompile_bare_metal)
    message(FATAL_ERROR "hwcompile_add_model(${name}): a bare-metal build has no TVM runtime "
                        "for EMIT c-library; use EMIT c-standalone")
  endif()
  _hwcompile_target_spec("${ARG_TARGET}" spec)

  set(art "${CMAKE_CURRENT_BINARY_DIR}/${name}.hwc")
  _hwcompile_compile_args(${name} "${model}" "${spec}" c-library args)
  if(ARG_DB)
    list(APPEND args --db "${ARG_DB}")
  endif()
  if(ARG_WEIGHTS)
    list(APPEND args --weights "${ARG_WEIGHTS}")
  endif()
  set(outputs "${art}/metadata.json" "${art}/include/${name}.h" "${art}/lib/lib${name}.a"
              "${art}/lib/lib${name}.so")
  if(ARG_WEIGHTS STREQUAL "file")
    list(APPEND outputs "${art}/lib/${name}.weights")
  endif()
  # The compiler and archiver of this build (a cross toolchain's, when there is one).
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND "${CMAKE_COMMAND}" -E env "HWCOMPILE_CXX=${CMAKE_CXX_COMPILER}"
            "HWCOMPILE_AR=${CMAKE_AR}" "HWCOMPILE_NM=${CMAKE_NM}"
            "HWCOMPILE_TVM_RUNTIME_DIR=${HWCOMPILE_TVM_RUNTIME_DIR}"
            "${HWCOMPILE_PYTHON}" -m hwcompile.cli compile ${args} ${ARG_OPTIONS}
    DEPENDS "${model}"
    COMMENT "hwcompile: compiling ${name} (${spec}) from ${ARG_MODEL}"
    VERBATIM)
  add_custom_target(${name}_hwcompile DEPENDS ${outputs})

  add_library(${name} INTERFACE)
  add_dependencies(${name} ${name}_hwcompile)
  target_include_directories(${name} INTERFACE "${art}/include")
  # Whole-archive keeps the model objects whose static initializers register the model.
  target_link_libraries(${name} INTERFACE
    "$<LINK_LIBRARY:WHOLE_ARCHIVE,${art}/lib/lib${name}.a>" ${CMAKE_CXX_IMPLICIT_LINK_LIBRARIES})
  set_property(TARGET ${name} PROPERTY INTERFACE_LINK_DEPENDS "${art}/lib/lib${name}.a")
  if(hwcompile_RUNTIME_FOUND)
    target_link_libraries(${name} INTERFACE hwcompile::tvm_runtime)
  endif()
  set_property(TARGET ${name} PROPERTY HWCOMPILE_ARTIFACT "${art}")
endfunction()

# hwcompile_add_model(... EMIT c-standalone): the generated C99 sources as a static library.
# Reads the caller's ARG_* (a macro-like helper called from hwcompile_add_model).
function(_hwcompile_add_standalone name model spec)
  get_property(languages GLOBAL PROPERTY ENABLED_LANGUAGES)
  if(NOT "C" IN_LIST languages)
    message(FATAL_ERROR "hwcompile_add_model(${name}): EMIT c-standalone builds C sources; "
                        "enable C in project()")
  endif()
  if(ARG_WEIGHTS AND NOT ARG_WEIGHTS STREQUAL "embedded")
    message(FATAL_ERROR "hwcompile_add_model(${name}): EMIT c-standalone keeps the weights as "
                        "const arrays (flash); WEIGHTS ${ARG_WEIGHTS} is for EMIT c-library")
  endif()
  set(art "${CMAKE_CURRENT_BINARY_DIR}/${name}.hwc")
  set(src "${art}/standalone/src")
  _hwcompile_compile_args(${name} "${model}" "${spec}" c-standalone args)
  if(ARG_CHECKS)
    list(APPEND args --c-checks)
  endif()
  set(outputs "${art}/metadata.json" "${art}/standalone/include/${name}.h" "${src}/${name}.c"
              "${src}/${name}_weights.c")
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND "${HWCOMPILE_PYTHON}" -m hwcompile.cli compile ${args} ${ARG_OPTIONS}
    DEPENDS "${model}"
    COMMENT "hwcompile: compiling ${name} (runtime-free C) from ${ARG_MODEL}"
    VERBATIM)
  add_library(${name} STATIC "${src}/${name}.c" "${src}/${name}_weights.c")
  target_include_directories(${name} PUBLIC "${art}/standalone/include")
  set_target_properties(${name} PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON
                        C_EXTENSIONS OFF HWCOMPILE_ARTIFACT "${art}")
  if(NOT MSVC)
    target_link_libraries(${name} PUBLIC m)  # <math.h> routines some kernels call
  endif()
endfunction()

set(hwcompile_FOUND TRUE)
