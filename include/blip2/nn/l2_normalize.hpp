// blip2/nn/l2_normalize.hpp (to be written).
#pragma once
