// blip2/nn/attention.hpp (to be written).
#pragma once
