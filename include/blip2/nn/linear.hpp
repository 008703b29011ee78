// blip2/nn/linear.hpp (to be written).
#pragma once
