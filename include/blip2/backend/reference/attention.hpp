// attention kernels of the reference backend (to be written).
#pragma once
