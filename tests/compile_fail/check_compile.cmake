# Compile one source file at test time and report the outcome; run with cmake -P by the compile_* tests.
#   -DCXX=<compiler> -DSOURCE=<file.cpp> -DINCLUDE_DIR=<blip2/include> -DEXPECT=fail|pass
#   [-DCXX_FLAGS=<;-separated extra flags>]
# EXPECT=pass: the script fails when the file does not compile (the control: the harness builds valid code).
# EXPECT=fail: the script prints the compiler's diagnostics when the file does not compile (the test's
#   PASS_REGULAR_EXPRESSION then looks for the expected static_assert text in them), and fails without
#   printing them when it compiles.
foreach(var CXX SOURCE INCLUDE_DIR EXPECT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_compile.cmake: -D${var}=... is required")
  endif()
endforeach()

execute_process(
  COMMAND ${CXX} -std=c++20 -fsyntax-only ${CXX_FLAGS} -I${INCLUDE_DIR} ${SOURCE}
  RESULT_VARIABLE result
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)

if(EXPECT STREQUAL "pass")
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "check_compile: ${SOURCE} must compile but did not:\n${out}")
  endif()
  message(STATUS "check_compile: ${SOURCE} compiles, as it must")
elseif(EXPECT STREQUAL "fail")
  if(result EQUAL 0)
    # Say nothing the expected-diagnostic regex could match.
    message(FATAL_ERROR "check_compile: the file compiled, but it must not")
  endif()
  message(STATUS "check_compile: the file did not compile, as expected; the compiler said:\n${out}")
else()
  message(FATAL_ERROR "check_compile.cmake: EXPECT must be fail or pass, not '${EXPECT}'")
endif()
