// blip2/nn/gelu.hpp (to be written).
#pragma once
