# Bare-metal Arm Cortex-M with Debian's gcc-arm-none-eabi and libnewlib-arm-none-eabi:
#   cmake -S app -B build -DCMAKE_TOOLCHAIN_FILE=<hwcompile>/cmake/toolchains/arm-none-eabi.cmake \
#         -DHWCOMPILE_CORTEX_M=cortex-m4f
# Only runtime-free models build here (hwcompile_add_model(... EMIT c-standalone)). The
# application brings its own startup code and linker script (see examples/embed_c/mcu).
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)

set(HWCOMPILE_CORTEX_M cortex-m4f CACHE STRING
    "the core: cortex-m0plus, cortex-m3, cortex-m4, cortex-m4f, cortex-m7, cortex-m33")
set(_cortex_m_flags_cortex-m0plus "-mcpu=cortex-m0plus -mthumb -mfloat-abi=soft")
set(_cortex_m_flags_cortex-m3 "-mcpu=cortex-m3 -mthumb -mfloat-abi=soft")
set(_cortex_m_flags_cortex-m4 "-mcpu=cortex-m4 -mthumb -mfloat-abi=soft")
set(_cortex_m_flags_cortex-m4f "-mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard")
set(_cortex_m_flags_cortex-m7 "-mcpu=cortex-m7 -mthumb -mfpu=fpv5-d16 -mfloat-abi=hard")
set(_cortex_m_flags_cortex-m33 "-mcpu=cortex-m33 -mthumb -mfpu=fpv5-sp-d16 -mfloat-abi=hard")
if(NOT DEFINED _cortex_m_flags_${HWCOMPILE_CORTEX_M})
  message(FATAL_ERROR "HWCOMPILE_CORTEX_M=${HWCOMPILE_CORTEX_M} is unknown; use cortex-m0plus, "
                      "cortex-m3, cortex-m4, cortex-m4f, cortex-m7 or cortex-m33")
endif()
set(_cortex_m_flags "${_cortex_m_flags_${HWCOMPILE_CORTEX_M}}")

set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_CXX_COMPILER arm-none-eabi-g++)
set(CMAKE_ASM_COMPILER arm-none-eabi-gcc)
set(CMAKE_C_FLAGS_INIT "${_cortex_m_flags} -ffunction-sections -fdata-sections")
set(CMAKE_CXX_FLAGS_INIT "${_cortex_m_flags} -ffunction-sections -fdata-sections")
set(CMAKE_EXE_LINKER_FLAGS_INIT "${_cortex_m_flags} -Wl,--gc-sections")
# No operating system to link a test program against: check the compiler with a library.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(CMAKE_TRY_COMPILE_PLATFORM_VARIABLES HWCOMPILE_CORTEX_M)

set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
