# Gate activations of the LSTM cell, inlined into the kernels' fused loops.
#
# Why not libm's tanh/tanhf: they are scalar calls the compiler cannot
# vectorize, and they took about half of the forward pass (perf, T=50, B=64,
# H=64, float32). These are plain arithmetic with no calls, so a loop of them
# vectorizes (GCC needs -fno-trapping-math to if-convert the clamps; see
# setup.py).
#
# Both rest on exp(-a), reduced in the classic way (fdlibm, Cody and Waite):
# a = k ln2 - r with integer k = round(a / ln2), |r| <= ln2 / 2, so
# exp(-a) = 2**-k * (1 + q), q = expm1(r) by its Taylor polynomial (degree 13
# in double, 7 in single: truncation below 0.1 ulp; an eighth degree in
# single moved the mean error by 0.001 ulp and the largest not at all, for
# 5 % more of the gate loop's instructions), and 2**-k is built from its
# bits. Keeping q and 2**-k apart gives expm1(-a) = 2**-k q + (2**-k - 1)
# without cancellation near 0, so
#     sigmoid(x) = 1 / (1 + exp(-x))
#     tanh(x)    = sign(x) * m / (2 - m),    m = -expm1(-2|x|)
# are accurate to a few ulp (relative) over the whole line. a is clamped to
# +-700 (double) or +-80 (single), where exp(-a) is still a normal number, so
# nothing overflows and +-inf give the limits; a NaN fails both comparisons
# and propagates. tests/test_kernels.py checks them against NumPy in ulps.
# Never build these with -ffast-math (-fassociative-math): it would fold the
# rounding of k, (a / ln2 + 1.5 * 2**p) - 1.5 * 2**p, back into a / ln2.
#
# ``floating`` picks the single or double precision constants at compile time;
# ``one``/``two`` keep float32 arithmetic in float32 (a bare literal would be
# a C double).

from cython cimport floating
from libc.math cimport copysign, copysignf, fabs, fabsf
from libc.stdint cimport uint32_t, uint64_t

# 80 and 700, as values the compiler cannot see, so that the clamps compile
# to min/max instructions (the header says why).
cdef extern from "_activation_limits.h":
    const float sklstm_exp_arg_limit_f
    const double sklstm_exp_arg_limit_d


cdef union _bits64:
    double f
    uint64_t u


cdef union _bits32:
    float f
    uint32_t u


cdef inline floating _exp_neg_parts(floating a, floating* scale,
                                    bint a_may_be_negative) noexcept nogil:
    """Return q and set scale = 2**-k so that exp(-a) = scale * (1 + q).

    ``a_may_be_negative`` is a constant at each (inlined) call: tanh passes
    ``a = 2|x|`` and False, which drops the lower clamp."""
    cdef _bits64 kd, s
    cdef _bits32 kf, sf
    cdef floating k, r, r2, r4
    # q = r * (c0 + c1 r + ... + c_n r**n), c_j = 1 / (j + 1)!, is evaluated
    # by Estrin's scheme (pairs, then powers r2, r4, r8), whose short
    # dependency chains run about 25% faster than Horner's in double.
    if floating is double:
        # limit < a, not a > limit: the form of minps(limit, a), which
        # returns a NaN a as it is
        if sklstm_exp_arg_limit_d < a:
            a = sklstm_exp_arg_limit_d
        if a_may_be_negative and a < -sklstm_exp_arg_limit_d:
            a = -sklstm_exp_arg_limit_d
        # k = round(a / ln2), by adding 1.5 * 2**52 (bits 0x4338000000000000):
        # the sum's last mantissa bits then hold k.
        kd.f = a * 1.4426950408889634 + 6755399441055744.0
        k = kd.f - 6755399441055744.0
        # r = k ln2 - a, with ln2 split in two so k * ln2_hi is exact.
        r = (k * 6.93147180369123816490e-01 - a) + k * 1.90821492927058770002e-10
        # bits of 2**-k: biased exponent 1023 - k
        s.u = (<uint64_t> 1023 + <uint64_t> 0x4338000000000000 - kd.u) << 52
        scale[0] = s.f
        r2 = r * r
        r4 = r2 * r2
        return r * (
            ((1.0 + 0.5 * r) + r2 * (0.16666666666666666 + 0.041666666666666664 * r))
            + r4 * ((0.008333333333333333 + 0.001388888888888889 * r)
                    + r2 * (0.0001984126984126984 + 2.48015873015873e-05 * r))
            + (r4 * r4) * ((2.7557319223985893e-06 + 2.755731922398589e-07 * r)
                           + r2 * (2.505210838544172e-08 + 2.08767569878681e-09 * r)
                           + r4 * 1.6059043836821613e-10)
        )
    else:
        if sklstm_exp_arg_limit_f < a:
            a = sklstm_exp_arg_limit_f
        if a_may_be_negative and a < -sklstm_exp_arg_limit_f:
            a = -sklstm_exp_arg_limit_f
        # k = round(a / ln2), by adding 1.5 * 2**23 (bits 0x4b400000)
        kf.f = a * <float> 1.44269502 + <float> 12582912.0
        k = kf.f - <float> 12582912.0
        r = (k * <float> 6.9314575195e-01 - a) + k * <float> 1.4286067653e-06
        # bits of 2**-k: biased exponent 127 - k
        sf.u = (<uint32_t> 127 + <uint32_t> 0x4b400000 - kf.u) << 23
        scale[0] = sf.f
        r2 = r * r
        r4 = r2 * r2
        return r * (
            ((<float> 1.0 + <float> 0.5 * r)
             + r2 * (<float> 0.16666666666666666 + <float> 0.041666666666666664 * r))
            + r4 * ((<float> 0.008333333333333333 + <float> 0.001388888888888889 * r)
                    + r2 * <float> 0.0001984126984126984)
        )


cdef inline floating sigmoid(floating x) noexcept nogil:
    cdef floating one = 1, scale, q
    q = _exp_neg_parts(x, &scale, True)
    return one / (one + (scale + scale * q))


cdef inline floating tanh(floating x) noexcept nogil:
    cdef floating one = 1, two = 2, scale, q, m
    # |x| and the sign put back are bit operations (no compare and blend)
    q = _exp_neg_parts(two * (fabsf(x) if floating is float else fabs(x)),
                       &scale, False)
    m = (one - scale) - scale * q  # -expm1(-2|x|), in [0, 1)
    m = m / (two - m)
    return copysignf(m, x) if floating is float else copysign(m, x)


# Derivatives written in terms of the activation's output y, which is what the
# forward pass stores: sigmoid'(x) = y * (1 - y), tanh'(x) = 1 - y**2.
cdef inline floating sigmoid_grad(floating y) noexcept nogil:
    cdef floating one = 1
    return y * (one - y)


cdef inline floating tanh_grad(floating y) noexcept nogil:
    cdef floating one = 1
    return one - y * y
