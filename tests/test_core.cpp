// test_core (to be written)
#include <doctest/doctest.h>
