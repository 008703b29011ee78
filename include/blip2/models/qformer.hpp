// blip2/models/qformer.hpp: the whole Q-Former: configuration, weights, BLIP-2's masks, the model, the
// image side, the layer, the passes and the heads.
#pragma once
#include "blip2/models/qformer/config.hpp"
#include "blip2/models/qformer/heads.hpp"
#include "blip2/models/qformer/image_kv.hpp"
#include "blip2/models/qformer/layer.hpp"
#include "blip2/models/qformer/masks.hpp"
#include "blip2/models/qformer/model.hpp"
#include "blip2/models/qformer/pass.hpp"
#include "blip2/models/qformer/weights.hpp"
