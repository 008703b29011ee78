# Drives tests/consumer for the install_consumer_* tests (cmake -P):
#   -DMODE=find_package|add_subdirectory -DSOURCE_DIR=<blip2 source> -DWORK_DIR=<scratch dir in the build tree>
#   -DCXX=<C++ compiler> [-DGENERATOR=<CMake generator>] [-DBUILD_TYPE=Release]
#   [-DPARTS=<,-separated optional parts the outer build has, e.g. onednn,eigen,xtensor>]
#   [-DDISABLED=<,-separated parts the outer build switched off (BLIP2_ENABLE_<PART>=OFF), e.g. onednn>]
# find_package:     configure blip2 (tests, examples, benchmarks OFF), build, install into WORK_DIR/prefix,
#                   check what was installed, check that asking for a component blip2 does not have
#                   fails cleanly, then configure the consumer with CMAKE_PREFIX_PATH=prefix, requiring
#                   the PARTS as components, build it and run it.
# add_subdirectory: configure the consumer with blip2's source tree as a subdirectory, build it, run it.
# Any failing step stops the script with its output (COMMAND_ERROR_IS_FATAL).
cmake_minimum_required(VERSION 3.25)
foreach(var MODE SOURCE_DIR WORK_DIR CXX)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
  endif()
endforeach()
string(REPLACE "," ";" parts "${PARTS}")
if(NOT DEFINED BUILD_TYPE)
  set(BUILD_TYPE Release)
endif()
set(generator_args)
if(DEFINED GENERATOR AND NOT GENERATOR STREQUAL "")
  set(generator_args -G "${GENERATOR}")
endif()
# Common configure arguments: the same compiler as the outer build, no package registry lookups.
set(common_args ${generator_args} -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE=${BUILD_TYPE}
                -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
# The parts the outer build switched off, switched off in the blip2 configured here too.
string(REPLACE "," ";" disabled "${DISABLED}")
set(disable_args)
foreach(part IN LISTS disabled)
  string(TOUPPER ${part} PART)
  list(APPEND disable_args -DBLIP2_ENABLE_${PART}=OFF)
endforeach()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(consumer_build "${WORK_DIR}/consumer-build")

if(MODE STREQUAL "find_package")
  set(prefix "${WORK_DIR}/prefix")
  message(STATUS "run_consumer: configure blip2 from ${SOURCE_DIR}")
  execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}" -B "${WORK_DIR}/blip2-build" ${common_args}
                          -DBLIP2_BUILD_TESTS=OFF -DBLIP2_BUILD_EXAMPLES=OFF -DBLIP2_BUILD_BENCHMARKS=OFF
                          ${disable_args} "-DCMAKE_INSTALL_PREFIX=${prefix}"
                  COMMAND_ERROR_IS_FATAL ANY)
  execute_process(COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}/blip2-build" COMMAND_ERROR_IS_FATAL ANY)
  message(STATUS "run_consumer: install blip2 into ${prefix}")
  execute_process(COMMAND ${CMAKE_COMMAND} --install "${WORK_DIR}/blip2-build" COMMAND_ERROR_IS_FATAL ANY)

  # What a user needs is there: headers, the package config, its version file and the exported targets.
  file(GLOB_RECURSE config_files RELATIVE "${prefix}" "${prefix}/*/blip2Config.cmake"
       "${prefix}/*/blip2ConfigVersion.cmake" "${prefix}/*/blip2Targets.cmake")
  list(LENGTH config_files n_config)
  if(NOT n_config EQUAL 3)
    message(FATAL_ERROR "run_consumer: expected blip2Config, blip2ConfigVersion and blip2Targets.cmake under "
                        "${prefix}, found: ${config_files}")
  endif()
  foreach(header core/view.hpp core/tensor_view.hpp backend/backend.hpp nn/layer_norm.hpp adapt/eigen.hpp
                 adapt/xtensor.hpp)
    if(NOT EXISTS "${prefix}/include/blip2/${header}")
      message(FATAL_ERROR "run_consumer: ${prefix}/include/blip2/${header} was not installed")
    endif()
  endforeach()

  # A component that blip2 does not have: configuring must fail and say which.
  execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/consumer" -B "${WORK_DIR}/consumer-bad-component"
                          ${common_args} -DBLIP2_CONSUMER_MODE=find_package "-DCMAKE_PREFIX_PATH=${prefix}"
                          -DBLIP2_CONSUMER_COMPONENTS=no_such_part
                  RESULT_VARIABLE bad_result OUTPUT_VARIABLE bad_out ERROR_VARIABLE bad_out)
  if(bad_result EQUAL 0 OR NOT bad_out MATCHES "no component 'no_such_part'")
    message(FATAL_ERROR "run_consumer: find_package(blip2 COMPONENTS no_such_part) should fail and name it:\n${bad_out}")
  endif()

  message(STATUS "run_consumer: configure the consumer with find_package(blip2 COMPONENTS ${parts})")
  execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/consumer" -B "${consumer_build}" ${common_args}
                          -DBLIP2_CONSUMER_MODE=find_package "-DCMAKE_PREFIX_PATH=${prefix}"
                          "-DBLIP2_CONSUMER_COMPONENTS=${parts}"
                  COMMAND_ERROR_IS_FATAL ANY)
  # It found the blip2 just installed, not another one.
  file(STRINGS "${consumer_build}/CMakeCache.txt" blip2_dir_line REGEX "^blip2_DIR:")
  string(FIND "${blip2_dir_line}" "${prefix}/" at)
  if(NOT at GREATER -1)
    message(FATAL_ERROR "run_consumer: the consumer found blip2 elsewhere: ${blip2_dir_line}")
  endif()
elseif(MODE STREQUAL "add_subdirectory")
  message(STATUS "run_consumer: configure the consumer with add_subdirectory(${SOURCE_DIR})")
  execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/consumer" -B "${consumer_build}" ${common_args}
                          -DBLIP2_CONSUMER_MODE=add_subdirectory "-DBLIP2_SOURCE_DIR=${SOURCE_DIR}" ${disable_args}
                  COMMAND_ERROR_IS_FATAL ANY)
  # As a subproject blip2 builds none of its tests, examples or benchmarks.
  foreach(part tests examples benchmarks)
    if(EXISTS "${consumer_build}/blip2/${part}")
      message(FATAL_ERROR "run_consumer: blip2 as a subdirectory configured its ${part}")
    endif()
  endforeach()
else()
  message(FATAL_ERROR "run_consumer.cmake: MODE must be find_package or add_subdirectory, not '${MODE}'")
endif()

message(STATUS "run_consumer: build and run the consumer")
execute_process(COMMAND ${CMAKE_COMMAND} --build "${consumer_build}" COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${consumer_build}/blip2_consumer" COMMAND_ERROR_IS_FATAL ANY)
