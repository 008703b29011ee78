// l2_normalize kernels of the reference backend (to be written).
#pragma once
