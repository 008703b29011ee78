// blip2/loss/cross_entropy.hpp (to be written).
#pragma once
