// dropout kernels of the onednn backend (to be written).
#pragma once
