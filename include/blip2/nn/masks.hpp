// blip2/nn/masks.hpp (to be written).
#pragma once
