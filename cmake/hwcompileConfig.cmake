# find_package(hwcompile): compile models at build time and link them into C/C++ targets.
#
#   hwcompile_add_model(<name> MODEL net.onnx [TARGET cpu] [PASSES p1 p2 ...] [DB dir]
#                       [WEIGHTS embedded|file] [OPTIONS extra compile options ...])
#
# defines the library target <name> (static archive, linked whole-archive automatically,
# with the TVM runtime) and the header <name>.h. The model is recompiled only when the
# model file changes. With a cross toolchain file (cmake/toolchains/), TARGET cpu compiles
# for CMAKE_SYSTEM_PROCESSOR.
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

get_property(_hwcompile_languages GLOBAL PROPERTY ENABLED_LANGUAGES)
if(NOT "CXX" IN_LIST _hwcompile_languages)
  enable_language(CXX)  # the model glue is C++: its runtime library links every consumer
endif()

set(hwcompile_RUNTIME_FOUND FALSE)
if(CMAKE_CROSSCOMPILING AND NOT HWCOMPILE_TVM_RUNTIME_DIR)
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

function(hwcompile_add_model name)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "MODEL;TARGET;DB;WEIGHTS" "PASSES;OPTIONS")
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
  _hwcompile_target_spec("${ARG_TARGET}" spec)

  set(art "${CMAKE_CURRENT_BINARY_DIR}/${name}.hwc")
  set(args "${model}" --target "${spec}" --output "${art}" --emit c-library --c-name "${name}")
  if(ARG_PASSES)
    list(JOIN ARG_PASSES "," passes)
    list(APPEND args --passes "${passes}")
  endif()
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

set(hwcompile_FOUND TRUE)
