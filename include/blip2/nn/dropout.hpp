// blip2/nn/dropout.hpp (to be written).
#pragma once
