// blip2/nn/row_max.hpp (to be written).
#pragma once
