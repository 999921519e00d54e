# Tests of the Python package tools/python/ckalloc (label "python"), included
# from tests/CMakeLists.txt. One ctest per tests/python/test_*.py, run by
# tests/python/run.py (exit 77 = every test in the file skipped, e.g. no torch
# or no CUDA device). The library under test is libckalloc_preload.so when
# the target exists, else libckalloc.so (the preload tests then skip).
find_program(CK_PYTHON3 python3)
if(NOT CK_PYTHON3 OR CKALLOC_SANITIZE)
  # A sanitized library cannot be dlopen'ed into an uninstrumented python.
  message(STATUS "ckalloc: Python package tests skipped (no python3, or sanitizer build)")
  return()
endif()
if(TARGET ckalloc_preload)
  set(CK_PY_LIB $<TARGET_FILE:ckalloc_preload>)
else()
  set(CK_PY_LIB $<TARGET_FILE:ckalloc>)
endif()
file(GLOB CK_PY_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/python/test_*.py)
foreach(src ${CK_PY_TESTS})
  get_filename_component(mod ${src} NAME_WE)
  string(REGEX REPLACE "^test_" "python_" name ${mod})
  add_test(NAME ${name} COMMAND ${CK_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/python/run.py ${mod}
    WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/python)
  set_tests_properties(${name} PROPERTIES LABELS "python" TIMEOUT 600 SKIP_RETURN_CODE 77
    ENVIRONMENT "CKALLOC_LIBRARY=${CK_PY_LIB};CKALLOC_PLAIN_LIBRARY=$<TARGET_FILE:ckalloc>;PYTHONPATH=${CMAKE_SOURCE_DIR}/tools/python;CKALLOC_BUILD_DIR=${CMAKE_BINARY_DIR};CKALLOC_INSTALL_LIBDIR=${CMAKE_INSTALL_LIBDIR};CKALLOC_EXPECT_VERSION=${PROJECT_VERSION};PYTHONDONTWRITEBYTECODE=1")
endforeach()
