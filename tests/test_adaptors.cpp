// test_adaptors (to be written)
#include <doctest/doctest.h>
