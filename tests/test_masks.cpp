// test_masks (to be written)
#include <doctest/doctest.h>
