/* The definitions behind _activation_limits.h, in a file of their own so
 * that the kernels, compiled apart, cannot fold them (see the header). */
#include "_activation_limits.h"

SKLSTM_HIDDEN const float sklstm_exp_arg_limit_f = 80.0f;
SKLSTM_HIDDEN const double sklstm_exp_arg_limit_d = 700.0;
