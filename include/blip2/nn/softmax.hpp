// blip2/nn/softmax.hpp (to be written).
#pragma once
