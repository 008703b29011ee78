// blip2/nn/embedding.hpp (to be written).
#pragma once
