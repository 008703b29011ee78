// blip2/nn/matmul.hpp (to be written).
#pragma once
